// Publish targets and image sources, decided from observations alone: each case with its reason.
import { describe, it } from 'vitest';
import { check, GiB, image, imageRecord } from './fixtures.js';

const A = 'a'.repeat(64);
const B = 'b'.repeat(64);
const PUB = (extra = '') => `version: 1
images:
  os:
    path: /img/os.qcow2
    size: 1G
    publish:
      - to: s3://bkt/os.qcow2
        endpoint: http://127.0.0.1:9000${extra}
`;
const os = image('/img/os.qcow2');
const rec = (sha256?: string, prune = false): [string, never] =>
  [
    'publish:s3://bkt/os.qcow2',
    { type: 'publish', to: 's3://bkt/os.qcow2', image: 'os', path: '/img/os.qcow2', target: {}, prune, sha256, uploadedAt: '2026-01-01T00:00:00Z' } as never,
  ] as [string, never];

describe('publish', () => {
  const cases = [
    { reason: 'nothing at the target: uploaded', remotes: [['s3://bkt/os.qcow2', null]], want: ['no-op images.os in-sync', 'create publish:s3://bkt/os.qcow2 new'] },
    {
      reason: 'the target holds this digest: in sync',
      remotes: [['s3://bkt/os.qcow2', { size: 5, sha256: A }]],
      want: ['no-op images.os in-sync', 'no-op publish:s3://bkt/os.qcow2 in-sync'],
    },
    {
      reason: 'the target holds an older upload of ours: uploaded again',
      remotes: [['s3://bkt/os.qcow2', { size: 5, sha256: B }]],
      inventory: [rec(B)],
      want: ['no-op images.os in-sync', 'update publish:s3://bkt/os.qcow2 drift'],
    },
    {
      reason: "an object without reconcile's digest and no record: someone else's, refused",
      remotes: [['s3://bkt/os.qcow2', { size: 5 }]],
      want: [
        'no-op images.os in-sync',
        /^refused publish:s3:\/\/bkt\/os\.qcow2: .*an object reconcile did not publish is at s3:\/\/bkt\/os\.qcow2 \(5 bytes, without its digest\)/,
      ],
    },
    {
      reason: 'the target could not be read: an upload that looks again at apply',
      remotes: [],
      want: ['no-op images.os in-sync', 'update publish:s3://bkt/os.qcow2 drift'],
    },
  ] as const;
  for (const c of cases)
    it(c.reason, () =>
      check({
        yaml: PUB(),
        files: [os],
        inventory: [imageRecord('os', os), ...((c as { inventory?: [string, never][] }).inventory ?? [])],
        digests: [['/img/os.qcow2', A]],
        remotes: c.remotes as never,
        reason: c.reason,
        want: [...c.want],
      }),
    );

  it("an image made in this plan: uploaded after it over reconcile's own last upload; over anything else refused", () => {
    const built = { reason: '', yaml: PUB(), absent: ['/img/os.qcow2'], remotes: [['s3://bkt/os.qcow2', { size: 5, sha256: B }]] as [string, never][] };
    check({ ...built, inventory: [rec(B)], want: ['create images.os new', 'update publish:s3://bkt/os.qcow2 drift'] });
    check({ ...built, want: ['create images.os new', /^refused publish:s3:\/\/bkt\/os\.qcow2: .*holds an upload this state directory did not make/] });
  });

  it('an object without the digest where reconcile had uploaded (replaced by someone): refused, not "changed"', () =>
    check({
      reason: '',
      yaml: PUB(),
      files: [os],
      inventory: [imageRecord('os', os), rec(B)],
      digests: [['/img/os.qcow2', A]],
      remotes: [['s3://bkt/os.qcow2', { size: 7 }]],
      want: ['no-op images.os in-sync', /^refused publish:s3:\/\/bkt\/os\.qcow2: .*an object reconcile did not publish is at/],
    }));

  it('prune: changed on a target in sync is recorded (an update that uploads nothing)', () =>
    check({
      reason: '',
      yaml: PUB().replace('endpoint: http://127.0.0.1:9000', 'endpoint: http://127.0.0.1:9000\n        prune: true'),
      files: [os],
      inventory: [imageRecord('os', os), rec(A, false)],
      digests: [['/img/os.qcow2', A]],
      remotes: [['s3://bkt/os.qcow2', { size: 5, sha256: A }]],
      want: ['no-op images.os in-sync', 'update publish:s3://bkt/os.qcow2 drift'],
    }));

  it('a target that left the YAML: deleted with --prune only if it said prune: true and still holds the upload; else only forgotten; without --prune a note', () => {
    const yaml = 'version: 1\nimages:\n  os: { path: /img/os.qcow2, size: 1G }\n';
    const base = { reason: '', yaml, files: [os], inventory: [imageRecord('os', os)] };
    const held: [string, never][] = [['s3://bkt/os.qcow2', { size: 5, sha256: A } as never]];
    check({
      ...base,
      inventory: [...base.inventory, rec(A, true)],
      remotes: held,
      prune: true,
      want: ['no-op images.os in-sync', 'delete inventory:publish:s3://bkt/os.qcow2 left-yaml destructive'],
    });
    check({
      ...base,
      inventory: [...base.inventory, rec(A, true)],
      remotes: [['s3://bkt/os.qcow2', { size: 5, sha256: B }]],
      prune: true,
      want: ['no-op images.os in-sync', 'delete inventory:publish:s3://bkt/os.qcow2 not-ours'],
    });
    check({
      ...base,
      inventory: [...base.inventory, rec(A, true)],
      remotes: [['s3://bkt/os.qcow2', null]],
      prune: true,
      want: ['no-op images.os in-sync', 'delete inventory:publish:s3://bkt/os.qcow2 gone'],
    });
    check({
      ...base,
      inventory: [...base.inventory, rec(A, false)],
      remotes: held,
      prune: true,
      want: ['no-op images.os in-sync', 'delete inventory:publish:s3://bkt/os.qcow2 not-ours'],
    });
    check({
      ...base,
      inventory: [...base.inventory, rec(A, true)],
      want: ['no-op images.os in-sync'],
      notes: [/s3:\/\/bkt\/os\.qcow2 \(published from images\.os\) left the YAML; `apply --prune` deletes it/],
    });
  });
});

describe('image sources', () => {
  const URLY = (rebuild = '') => `version: 1
images:
  os: { path: /img/os.qcow2, source: { url: "https://h/os.qcow2.xz", checksumUrl: "https://h/SUMS" }${rebuild} }
`;
  const key = 'checksum:https://h/SUMS https://h/os.qcow2.xz';
  it('a download whose list names a new digest: a replace that needs --allow-replace, unless rebuild: onChange', () => {
    const f = image('/img/os.qcow2');
    const base = { reason: '', files: [f], inventory: [imageRecord('os', f, { source: `url:sha256:${A}` })], sources: { digests: [[key, B]] as [string, string][] } };
    check({ ...base, yaml: URLY(), want: [/^refused images\.os: .*must be rebuilt \(source url:sha256:a+ -> url:sha256:b+\).*--allow-replace/] });
    check({ ...base, yaml: URLY(', rebuild: onChange'), want: ['replace images.os rebuild'] });
    check({ ...base, yaml: URLY(), sources: { digests: [[key, A]] }, want: ['no-op images.os in-sync'] });
  });
  it('a checksum list out of reach: an image made already is kept (a note), a new one is refused', () => {
    const f = image('/img/os.qcow2');
    const errors: [string, string][] = [[key, 'GET https://h/SUMS: HTTP 503']];
    check({
      reason: '',
      yaml: URLY(),
      files: [f],
      inventory: [imageRecord('os', f, { source: `url:sha256:${A}` })],
      sources: { errors },
      want: ['no-op images.os in-sync'],
      notes: [/images\.os: GET https:\/\/h\/SUMS: HTTP 503; the image is kept as it was built/],
    });
    check({ reason: '', yaml: URLY(), absent: ['/img/os.qcow2'], sources: { errors }, want: [/^refused images\.os: .*GET https:\/\/h\/SUMS: HTTP 503/] });
  });
  it('a bootc install is identified by the image ID and its install options: new kernel arguments or bootc turned off is a rebuild', () => {
    const BOOTC = (opts: string) => `version: 1
images:
  os: { path: /img/os.qcow2, size: 20G, source: { container: "localhost/os:1"${opts} } }
`;
    const f = image('/img/os.qcow2', { virtualSize: 20 * GiB });
    const base = {
      reason: '',
      files: [f],
      inventory: [imageRecord('os', f, { source: `bootc:sha256:${A}` })],
      sources: {
        digests: [
          ['container:localhost/os:1 bootc', A],
          ['container:localhost/os:1', A],
        ] as [string, string][],
      },
    };
    check({ ...base, yaml: BOOTC(', bootc: true'), want: ['no-op images.os in-sync'] });
    check({
      ...base,
      yaml: BOOTC(', bootc: { kargs: [console=ttyS0] }'),
      want: [/^refused images\.os: .*must be rebuilt \(source bootc:sha256:a+ -> bootc:sha256:a+ \["karg=console=ttyS0"\]\).*--allow-replace/],
    });
    check({ ...base, yaml: BOOTC(''), want: [/^refused images\.os: .*must be rebuilt \(source bootc:sha256:a+ -> container:sha256:a+\)/] });
  });
});
