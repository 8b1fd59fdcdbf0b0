// Pool volumes, pools and VM disks: the pure diffs, case by case.
import { describe, expect, it } from 'vitest';
import { check, diff, disk, domain, GiB, image, imageRecord, pool, volume, volumeRecord, type Case } from './fixtures.js';

type Row = Case & { want: (string | RegExp)[]; notes?: RegExp[] };

const P = 'version: 1\npools:\n  p: { type: dir, path: /vr-test/p }\n';
/** The pool declared as adopted: volume cases are about volumes, in a pool reconcile did not define. */
const PA = 'version: 1\npools:\n  p: { type: dir, path: /vr-test/p, adopt: true }\n';
const vol = (decl: string) => `${PA}images:\n  v: ${decl}\n`;
const v = volume('p', 'v.qcow2');
const listed = pool('p', { path: '/vr-test/p', vols: { 'v.qcow2': v.path } });
const empty = pool('p', { path: '/vr-test/p' });

describe('volume diff', () => {
  it.each<Row>([
    {
      reason: 'an absent volume is created in its pool',
      yaml: vol('{ pool: p, volume: v.qcow2, size: 1G }'),
      pools: [empty],
      volumes: [['p/v.qcow2', null]],
      want: ['no-op pools.p in-sync-adopted', 'create images.v new'],
    },
    {
      reason: 'a volume in a pool being created waits for the pool',
      yaml: vol('{ pool: p, volume: v.qcow2, size: 1G }'),
      pools: [['p', null]],
      want: ['create pools.p new', 'create images.v new'],
    },
    {
      reason: 'a volume reconcile did not create is refused without adopt',
      yaml: vol('{ pool: p, volume: v.qcow2, size: 1G }'),
      pools: [listed],
      volumes: [v],
      want: ['no-op pools.p in-sync-adopted', /^refused images\.v: .*exists and reconcile did not create it/],
    },
    {
      reason: 'an adopted volume that matches is in sync',
      yaml: vol('{ pool: p, volume: v.qcow2, size: 1G, adopt: true }'),
      pools: [listed],
      volumes: [v],
      want: ['no-op pools.p in-sync-adopted', 'no-op images.v in-sync-adopted'],
    },
    {
      reason: 'our volume grows in place',
      yaml: vol('{ pool: p, volume: v.qcow2, size: 2G }'),
      pools: [listed],
      volumes: [v],
      inventory: [volumeRecord('v', v)],
      want: ['no-op pools.p in-sync-adopted', 'update images.v drift'],
    },
    {
      reason: 'a smaller size is a refused shrink',
      yaml: vol('{ pool: p, volume: v.qcow2, size: 512M }'),
      pools: [listed],
      volumes: [v],
      inventory: [volumeRecord('v', v)],
      want: ['no-op pools.p in-sync-adopted', /^refused images\.v: .*smaller than volume v\.qcow2 .*shrinking destroys data/],
    },
    {
      reason: 'a format change needs --allow-replace',
      yaml: vol('{ pool: p, volume: v.qcow2, size: 1G, format: raw }'),
      pools: [listed],
      volumes: [v],
      inventory: [volumeRecord('v', v)],
      want: ['no-op pools.p in-sync-adopted', /^refused images\.v: .*must be rebuilt \(format qcow2 -> raw\); this replaces it .*--allow-replace/],
    },
    {
      reason: 'protect: true refuses the replace',
      yaml: vol('{ pool: p, volume: v.qcow2, size: 1G, format: raw, protect: true }'),
      pools: [listed],
      volumes: [v],
      inventory: [volumeRecord('v', v)],
      allowReplace: true,
      want: ['no-op pools.p in-sync-adopted', /^refused images\.v: .*would be replaced .*protect: true/],
    },
    {
      reason: 'with --allow-replace it is a destructive replace',
      yaml: vol('{ pool: p, volume: v.qcow2, size: 1G, format: raw }'),
      pools: [listed],
      volumes: [v],
      inventory: [volumeRecord('v', v)],
      allowReplace: true,
      want: ['no-op pools.p in-sync-adopted', 'replace images.v rebuild destructive'],
    },
    {
      reason: 'a volume an interrupted apply left building is rebuilt without --allow-replace',
      yaml: vol('{ pool: p, volume: v.qcow2, size: 1G }'),
      pools: [listed],
      volumes: [v],
      inventory: [volumeRecord('v', v, { status: 'building' })],
      want: ['no-op pools.p in-sync-adopted', 'replace images.v interrupted'],
    },
    {
      reason: 'a building record with no key proves nothing: the volume is left alone',
      yaml: vol('{ pool: p, volume: v.qcow2, size: 1G }'),
      pools: [listed],
      volumes: [v],
      inventory: [volumeRecord('v', v, { status: 'building', key: '' })],
      want: ['no-op pools.p in-sync-adopted', /^refused images\.v: .*an apply was killed while creating it/],
    },
    {
      reason: 'a kill inside vol-create: a file at the expected path born moments after the intent is the half-made volume, rebuilt',
      yaml: vol('{ pool: p, volume: v.qcow2, size: 1G }'),
      pools: [listed],
      volumes: [{ ...v, birth: '1700000000500000000' }],
      inventory: [volumeRecord('v', v, { status: 'building', key: '', birth: undefined, since: '1700000000000000000' })],
      want: ['no-op pools.p in-sync-adopted', 'replace images.v interrupted'],
    },
    {
      reason: 'the same, but the file was born 11 s after the intent: someone else put it there, left alone',
      yaml: vol('{ pool: p, volume: v.qcow2, size: 1G }'),
      pools: [listed],
      volumes: [{ ...v, birth: '1700000011000000000' }],
      inventory: [volumeRecord('v', v, { status: 'building', key: '', birth: undefined, since: '1700000000000000000' })],
      want: ['no-op pools.p in-sync-adopted', /^refused images\.v: .*an apply was killed while creating it/],
    },
    {
      reason: 'born moments after the intent, but not of the shape vol-create was asked for (19 bytes, raw): a file someone put there after a kill, left alone (adversarial pass)',
      yaml: vol('{ pool: p, volume: v.qcow2, size: 1G }'),
      pools: [listed],
      volumes: [{ ...v, capacity: 19, format: 'raw', birth: '1700000001000000000' }],
      inventory: [volumeRecord('v', v, { status: 'building', key: '', birth: undefined, since: '1700000000000000000', making: { capacity: 1073741824, format: 'qcow2' } })],
      want: ['no-op pools.p in-sync-adopted', /^refused images\.v: .*an apply was killed while creating it/],
    },
    {
      reason: 'born moments after the intent and of the shape asked for: the half-made volume, rebuilt',
      yaml: vol('{ pool: p, volume: v.qcow2, size: 1G }'),
      pools: [listed],
      volumes: [{ ...v, birth: '1700000001000000000' }],
      inventory: [volumeRecord('v', v, { status: 'building', key: '', birth: undefined, since: '1700000000000000000', making: { capacity: v.capacity, format: v.format } })],
      want: ['no-op pools.p in-sync-adopted', 'replace images.v interrupted'],
    },
    {
      reason: 'a file born 1 s before the intent was there already (a create that failed on it, then a kill): left alone',
      yaml: vol('{ pool: p, volume: v.qcow2, size: 1G }'),
      pools: [listed],
      volumes: [{ ...v, birth: '1699999999000000000' }],
      inventory: [volumeRecord('v', v, { status: 'building', key: '', birth: undefined, since: '1700000000000000000' })],
      want: ['no-op pools.p in-sync-adopted', /^refused images\.v: .*an apply was killed while creating it/],
    },
    {
      reason: "a file born 50 ms 'before' the intent is the one vol-create made (file timestamps use a coarse clock)",
      yaml: vol('{ pool: p, volume: v.qcow2, size: 1G }'),
      pools: [listed],
      volumes: [{ ...v, birth: '1699999999950000000' }],
      inventory: [volumeRecord('v', v, { status: 'building', key: '', birth: undefined, since: '1700000000000000000' })],
      want: ['no-op pools.p in-sync-adopted', 'replace images.v interrupted'],
    },
    {
      reason: "a file that took the volume's name (new birth time) is not ours",
      yaml: vol('{ pool: p, volume: v.qcow2, size: 1G }'),
      pools: [listed],
      volumes: [{ ...v, birth: '43' }],
      inventory: [volumeRecord('v', v)],
      want: ['no-op pools.p in-sync-adopted', /^refused images\.v: .*reconcile did not create it/],
    },
    {
      reason: 'an image file now declared as a volume of the pool holding it is the same file: not pruned',
      yaml: vol('{ pool: p, volume: v.qcow2, adopt: true }'),
      pools: [listed],
      volumes: [v],
      files: [image(v.path)],
      inventory: [imageRecord('old', image(v.path))],
      prune: true,
      want: ['no-op pools.p in-sync-adopted', 'no-op images.v in-sync-adopted'],
      notes: [/\/vr-test\/p\/v\.qcow2 \(was images\.old\) is declared as images\.v under another path; not pruned/],
    },
    {
      reason: 'without --prune a volume that left the YAML is noted',
      yaml: PA,
      pools: [listed],
      volumes: [v],
      inventory: [volumeRecord('v', v)],
      want: ['no-op pools.p in-sync-adopted'],
      notes: [/volume v\.qcow2 in pool p \(was images\.v\) left the YAML; `apply --prune` deletes it/],
    },
    {
      reason: 'with --prune our volume is deleted',
      yaml: PA,
      pools: [listed],
      volumes: [v],
      inventory: [volumeRecord('v', v)],
      prune: true,
      want: ['no-op pools.p in-sync-adopted', 'delete inventory:volume:p/v.qcow2 left-yaml destructive'],
    },
    {
      reason: 'with --prune a volume that is not ours any more is forgotten',
      yaml: PA,
      pools: [listed],
      volumes: [{ ...v, key: '/other' }],
      inventory: [volumeRecord('v', v)],
      prune: true,
      want: ['no-op pools.p in-sync-adopted', 'delete inventory:volume:p/v.qcow2 not-ours'],
    },
  ])('$reason', check);
});

const poolRecord = (name: string, o: Record<string, unknown> = {}): [string, never] => [
  `pool:${name}`,
  { type: 'pool', name, uuid: `uuid-${name}`, createdAt: '2026-01-01T00:00:00Z', ...o } as never,
];

describe('pool diff', () => {
  it.each<Row>([
    { reason: 'an absent pool is defined, built and started', yaml: P, pools: [['p', null]], want: ['create pools.p new'] },
    { reason: 'ours and matching: in sync', yaml: P, pools: [empty], inventory: [poolRecord('p')], want: ['no-op pools.p in-sync'] },
    {
      reason: 'a stopped pool is started in place',
      yaml: P,
      pools: [{ ...empty, active: false, volumes: undefined }],
      inventory: [poolRecord('p')],
      want: ['update pools.p drift'],
    },
    {
      reason: 'a changed target path needs --allow-replace',
      yaml: 'version: 1\npools:\n  p: { type: dir, path: /vr-test/q }\n',
      pools: [empty],
      inventory: [poolRecord('p')],
      want: [/^refused pools\.p: .*path \/vr-test\/p -> \/vr-test\/q/],
    },
    {
      reason: "a pool under the name of an interrupted define, without the uuid recorded for it, is someone else's: never ours",
      yaml: P,
      pools: [empty],
      inventory: [poolRecord('p', { status: 'building', uuid: 'the-one-reconcile-chose' })],
      want: [/^refused pools\.p: .*exists and reconcile did not define it/],
      notes: [/an apply was killed while defining it/],
    },
    {
      reason: 'an existing pool reconcile did not define is refused unless adopted',
      yaml: P,
      pools: [empty],
      want: [/^refused pools\.p: .*exists and reconcile did not define it, so it is left alone\. To manage it, add adopt: true to pools\.p/],
    },
    {
      reason: 'its volumes are left alone too',
      yaml: `${P}images:\n  v: { pool: p, volume: v.qcow2, size: 1G }\n`,
      pools: [empty],
      volumes: [['p/v.qcow2', null]],
      want: [/^refused pools\.p: /, /^refused images\.v: .*pool p exists and reconcile did not define it/],
    },
    {
      reason: 'an adopted pool keeps its autostart and activity unless its declaration sets them',
      yaml: PA,
      pools: [{ ...empty, autostart: false, active: false, volumes: undefined }],
      want: ['no-op pools.p in-sync-adopted'],
    },
    {
      reason: 'an adopted pool is changed in what its declaration sets',
      yaml: 'version: 1\npools:\n  p: { type: dir, path: /vr-test/p, adopt: true, autostart: true }\n',
      pools: [{ ...empty, autostart: false }],
      want: ['update pools.p drift'],
    },
    {
      reason: 'with --prune an empty pool of ours is undefined',
      yaml: 'version: 1\n',
      pools: [empty],
      inventory: [poolRecord('p')],
      prune: true,
      want: ['delete inventory:pool:p left-yaml destructive'],
    },
    {
      reason: 'a pool holding a volume reconcile did not make is undefined all the same (its storage is kept)',
      yaml: 'version: 1\n',
      pools: [listed],
      inventory: [poolRecord('p')],
      prune: true,
      want: ['delete inventory:pool:p left-yaml destructive'],
    },
    {
      reason: 'a pool holding a volume reconcile made that this plan does not prune is not undefined',
      yaml: 'version: 1\n',
      pools: [listed],
      inventory: [poolRecord('p'), volumeRecord('v', v)],
      prune: true,
      want: [/^refused inventory:pool:p: pool p left the YAML, but 1 volume\(s\) reconcile made in it are not being pruned \(v\.qcow2\); it is not undefined/],
    },
    {
      reason: 'an inactive pool is undefined (what it holds does not matter to an undefine)',
      yaml: 'version: 1\n',
      pools: [{ ...empty, active: false, volumes: undefined }],
      inventory: [poolRecord('p')],
      prune: true,
      want: ['delete inventory:pool:p left-yaml destructive'],
    },
    {
      reason: "a new pool over a directory of the user's with permissions declared is refused unless adopted",
      yaml: 'version: 1\npools:\n  p: { type: dir, path: /vr-test/p, permissions: { mode: "0700" } }\n',
      pools: [['p', null]],
      directories: [['/vr-test/p', { kind: 'directory', entries: ['notes.txt'] }]],
      want: [/^refused pools\.p: .*\/vr-test\/p exists and reconcile did not make it; the declared permissions would change its owner and mode/],
    },
    {
      reason: "a new pool over a directory of the user's without permissions uses it as it is",
      yaml: 'version: 1\npools:\n  p: { type: dir, path: /vr-test/p }\n',
      pools: [['p', null]],
      directories: [['/vr-test/p', { kind: 'directory', entries: [] }]],
      want: ['create pools.p new'],
    },
    {
      reason: 'a new pool whose target is a file is refused',
      yaml: 'version: 1\npools:\n  p: { type: dir, path: /vr-test/p }\n',
      pools: [['p', null]],
      directories: [['/vr-test/p', { kind: 'other' }]],
      want: [/^refused pools\.p: .*\/vr-test\/p exists and is not a directory/],
    },
    {
      reason: 'declaring deleteStorage on a pool of ours changes its record only',
      yaml: 'version: 1\npools:\n  p: { type: dir, path: /vr-test/p, deleteStorage: true }\n',
      pools: [empty],
      inventory: [poolRecord('p', { storage: 'made' })],
      want: ['update pools.p drift'],
    },
    {
      reason: 'a pool holding only volumes pruned in the same plan goes after them',
      yaml: 'version: 1\n',
      pools: [listed],
      volumes: [v],
      inventory: [poolRecord('p'), volumeRecord('v', v)],
      prune: true,
      want: ['delete inventory:pool:p left-yaml destructive', 'delete inventory:volume:p/v.qcow2 left-yaml destructive'],
    },
    {
      reason: 'a pool redefined by someone else is forgotten',
      yaml: 'version: 1\n',
      pools: [{ ...empty, uuid: 'other' }],
      inventory: [poolRecord('p')],
      prune: true,
      want: ['delete inventory:pool:p not-ours'],
    },
    {
      reason: 'a pool left building by a killed apply, under another uuid, is forgotten, never undefined',
      yaml: 'version: 1\n',
      pools: [empty],
      inventory: [poolRecord('p', { status: 'building', uuid: 'the-one-reconcile-chose' })],
      prune: true,
      want: ['delete inventory:pool:p not-ours'],
    },
    {
      reason: "a pool left building by a killed apply, with the uuid recorded for it, is reconcile's: in sync, and pruned",
      yaml: 'version: 1\n',
      pools: [empty],
      inventory: [poolRecord('p', { status: 'building' })],
      prune: true,
      want: ['delete inventory:pool:p left-yaml destructive'],
    },
  ])('$reason', check);

  it('a pool pruned with its volumes waits for their deletion', () => {
    const d = diff({ reason: '', yaml: 'version: 1\n', pools: [listed], volumes: [v], inventory: [poolRecord('p'), volumeRecord('v', v)], prune: true });
    expect(d.actions.find((a) => a.id === 'inventory:pool:p')!.dependsOn).toEqual(['inventory:volume:p/v.qcow2']);
  });
});

const IMG = '/vr-test/root.qcow2';
const VM = (disks: string, create = '') => `version: 1\nimages:\n  root: { path: ${IMG}, adopt: true }\nvms:\n  web:${create}\n    disks: ${disks}\n`;
const file = { path: IMG, driver: 'qcow2', virtualSize: GiB, actualSize: 0, file: { uid: 0, gid: 0, mode: 0o600, ino: 7, dev: 1, birth: '7' } };
const domainRecord = (name: string, o: Record<string, unknown> = {}): [string, never] => [
  `domain:${name}`,
  { type: 'domain', name, uuid: `uuid-${name}`, createdAt: '2026-01-01T00:00:00Z', ...o } as never,
];

describe('domain diff', () => {
  it.each<Row>([
    {
      reason: 'an absent domain with create: is defined with its disks',
      yaml: VM('[{ image: root }]', '\n    create: { memory: 1G, vcpus: 1 }'),
      files: [file],
      domains: [['web', null]],
      want: ['no-op images.root in-sync-adopted', 'create vms.web new'],
    },
    {
      reason: 'an absent domain without create: is refused',
      yaml: VM('[{ image: root }]'),
      files: [file],
      domains: [['web', null]],
      want: ['no-op images.root in-sync-adopted', /^refused vms\.web: .*does not exist; add create:/],
    },
    {
      reason: 'a declared disk missing from the domain is attached',
      yaml: VM('[{ image: root }]'),
      files: [file],
      domains: [domain('web', { ownership: { created: false, disks: [] } })],
      want: ['no-op images.root in-sync-adopted', 'update vms.web drift'],
    },
    {
      reason: 'a cache policy that differs is updated',
      yaml: VM('[{ image: root, cache: none }]'),
      files: [file],
      domains: [domain('web', { persistent: [disk('vda', IMG)], ownership: { created: true, disks: ['vda'] } })],
      want: ['no-op images.root in-sync-adopted', 'update vms.web drift'],
    },
    {
      reason: 'matching disks are in sync',
      yaml: VM('[{ image: root }]'),
      files: [file],
      domains: [domain('web', { persistent: [disk('vda', IMG)], ownership: { created: true, disks: ['vda'] } })],
      want: ['no-op images.root in-sync-adopted', 'no-op vms.web in-sync'],
    },
    {
      reason: 'a disk reconcile did not attach is never replaced',
      yaml: VM('[{ image: root, target: vda }]'),
      files: [file],
      domains: [domain('web', { persistent: [disk('vda', '/vr-test/other.qcow2')], ownership: { created: false, disks: [] } })],
      want: ['no-op images.root in-sync-adopted', /^refused vms\.web: .*holds \/vr-test\/other\.qcow2, which reconcile did not attach/],
    },
    {
      reason: 'an interrupted define (the domain has the uuid recorded before it) is finished',
      yaml: VM('[{ image: root }]'),
      files: [file],
      domains: [domain('web', { persistent: [disk('vda', IMG)], ownership: { created: true, disks: ['vda'] } })],
      inventory: [domainRecord('web', { status: 'building' })],
      want: ['no-op images.root in-sync-adopted', 'update vms.web interrupted'],
    },
    {
      reason: 'with --prune a shut-off domain reconcile defined is undefined',
      yaml: 'version: 1\n',
      domains: [domain('old')],
      inventory: [domainRecord('old')],
      prune: true,
      want: ['delete inventory:domain:old left-yaml destructive'],
    },
    {
      reason: 'a running domain is not undefined',
      yaml: 'version: 1\n',
      domains: [domain('old', { running: true })],
      inventory: [domainRecord('old')],
      prune: true,
      want: [/^refused inventory:domain:old: .*is running/],
    },
    {
      reason: 'a domain defined by someone else under the name is forgotten',
      yaml: 'version: 1\n',
      domains: [domain('old', { uuid: 'x' })],
      inventory: [domainRecord('old')],
      prune: true,
      want: ['delete inventory:domain:old not-ours'],
    },
  ])('$reason', check);
});
