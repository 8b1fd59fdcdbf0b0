// Fixtures for the table-driven diff tests: a desired state from YAML text (as users write
// it), observations as the tool wrappers report them, and the pure diff of every kind.
import { ABSENT, observed, type DirectoryContent, type Observation } from '../../src/providers/observe.js';
import type { ObservedImage } from '../../src/providers/image/observe.js';
import type { ObservedPool } from '../../src/tools/libvirt-pool.js';
import type { ObservedVolume } from '../../src/tools/libvirt-volume.js';
import type { DiskDevice, ObservedDomain } from '../../src/tools/libvirt-domain.js';
import { desiredStateFrom } from '../../src/reconcile/config.js';
import { diffAll } from '../../src/reconcile/engine.js';
import type { Inventory, InventoryRecord } from '../../src/reconcile/inventory.js';
import { expect } from 'vitest';
import type { Action } from '../../src/reconcile/plan.js';
import type { RemoteObject } from '../../src/publish/place.js';

export const MiB = 1024 ** 2;
export const GiB = 1024 ** 3;

let ino = 1000;
export function image(path: string, o: Partial<ObservedImage> & { mode?: number; uid?: number } = {}): ObservedImage {
  const { mode, uid, ...rest } = o;
  return {
    path,
    driver: 'qcow2',
    virtualSize: GiB,
    actualSize: 0,
    clusterSize: 65536,
    qcow2: { compat: '1.1', lazyRefcounts: false, compressionType: 'zlib', refcountBits: 16, extendedL2: false },
    file: { uid: uid ?? 0, gid: 0, mode: mode ?? 0o600, ino: ino++, dev: 1, birth: String(1_700_000_000_000_000_000 + ino) },
    ...rest,
  };
}

/** The inventory record reconcile keeps of an image it created (same identity as the file). */
export function imageRecord(name: string, f: ObservedImage, recorded: Record<string, string> = { source: 'blank' }): [string, InventoryRecord] {
  return [
    `image:${f.path}`,
    { type: 'image', name, path: f.path, ino: f.file.ino, dev: f.file.dev, birth: f.file.birth, extents: [], createdAt: '2026-01-01T00:00:00Z', recorded },
  ];
}

export function pool(name: string, o: Partial<ObservedPool> & { path?: string; vols?: Record<string, string> } = {}): ObservedPool {
  const { path, vols, ...rest } = o;
  return {
    name,
    uuid: `uuid-${name}`,
    definition: { type: 'dir', path: path ?? `/vr-test/${name}`, source: { hosts: [] } },
    active: true,
    autostart: true,
    persistent: true,
    volumes: new Map(Object.entries(vols ?? {})),
    ...rest,
  };
}

export function volume(poolName: string, name: string, o: Partial<ObservedVolume> = {}): ObservedVolume {
  const path = `/vr-test/${poolName}/${name}`;
  return {
    pool: poolName,
    name,
    key: path,
    path,
    type: 'file',
    format: 'qcow2',
    capacity: GiB,
    allocation: 0,
    permissions: { mode: 0o600, owner: 0, group: 0 },
    birth: '42',
    ...o,
  };
}

export function volumeRecord(imageName: string, v: ObservedVolume, o: Record<string, unknown> = {}): [string, InventoryRecord] {
  return [
    `volume:${v.pool}/${v.name}`,
    {
      type: 'volume',
      name: imageName,
      pool: v.pool,
      volume: v.name,
      key: v.key,
      path: v.path,
      status: 'ready',
      birth: v.birth,
      createdAt: '2026-01-01T00:00:00Z',
      recorded: { source: 'blank' },
      ...o,
    } as InventoryRecord,
  ];
}

export function disk(target: string, file: string, o: Partial<DiskDevice> = {}): DiskDevice {
  return { target, bus: 'virtio', device: 'disk', type: 'file', source: { file }, driverType: 'qcow2', readonly: false, ...o };
}

export function domain(name: string, o: Partial<ObservedDomain> = {}): ObservedDomain {
  return { name, uuid: `uuid-${name}`, virtType: 'kvm', running: false, state: 'shut off', persistent: [], ownership: { created: true, disks: [] }, ...o };
}

export interface Case {
  reason: string;
  yaml: string;
  files?: ObservedImage[];
  /** paths observed as absent */
  absent?: string[];
  pools?: (ObservedPool | [string, null])[];
  volumes?: (ObservedVolume | [string, null])[];
  domains?: (ObservedDomain | [string, null])[];
  inventory?: [string, InventoryRecord][];
  prune?: boolean;
  allowReplace?: boolean;
  /** pool targets and what is there */
  directories?: [string, DirectoryContent][];
  /** sha256 of cloud-init seed files (and their stat signature, here the same) */
  contents?: [string, string, number?][];
  /** what is at publish targets (null: nothing); a target left out could not be read */
  remotes?: [string, RemoteObject | null][];
  /** sha256 of published image files */
  digests?: [string, string][];
  /** digests of sources (checksum lists, directories, container images) by source key, and errors */
  sources?: { digests?: [string, string][]; errors?: [string, string][] };
}

export function diff(c: Case) {
  const state = desiredStateFrom([{ path: '/vr-test/storage.yaml', text: c.yaml }]);
  const obs: Observation = {
    files: new Map([...(c.files ?? []).map((f) => [f.path, observed(f)] as const), ...(c.absent ?? []).map((p) => [p, ABSENT] as const)]),
    pools: new Map((c.pools ?? []).map((p) => (Array.isArray(p) ? [p[0], ABSENT] : [p.name, observed(p)]))),
    volumes: new Map((c.volumes ?? []).map((v) => (Array.isArray(v) ? [v[0], ABSENT] : [`${v.pool}/${v.name}`, observed(v)]))),
    domains: new Map((c.domains ?? []).map((d) => (Array.isArray(d) ? [d[0], ABSENT] : [d.name, observed(d)]))),
    caps: new Map([['kvm', { virtType: 'kvm', arch: 'x86_64', buses: ['virtio', 'sata', 'scsi', 'ide', 'usb'] }]]),
    kvm: { usable: true, virtType: 'kvm' },
    errors: new Map(),
    identities: new Map(),
    directories: new Map(c.directories ?? []),
    contents: new Map((c.contents ?? []).map(([p, sha, mode]) => [p, { sha256: sha, size: 1, signature: sha, mode: mode ?? 0o600 }])),
    remotes: new Map(c.remotes ?? []),
    digests: new Map(c.digests ?? []),
    sources: { digests: new Map(c.sources?.digests ?? []), errors: new Map(c.sources?.errors ?? []), spaced: new Map() },
  };
  const inventory: Inventory = { version: 1, objects: Object.fromEntries(c.inventory ?? []) };
  return diffAll(state, obs, inventory, { allowReplace: c.allowReplace ?? false, prune: c.prune ?? false });
}

/** One line per action and refusal, for table expectations: "create images.a new", "refused images.a: …". */
export function summary(d: ReturnType<typeof diff>): string[] {
  return [...d.actions.map((a: Action) => `${a.kind} ${a.id} ${a.code}${a.destructive ? ' destructive' : ''}`), ...d.refusals.map((r) => `refused ${r.id}: ${r.message}`)];
}

/** A case's expectations: its actions and refusals in order (exact lines or patterns), and notes. */
export function check(c: Case & { want: (string | RegExp)[]; notes?: RegExp[] }): void {
  const d = diff(c);
  const got = summary(d);
  expect(got.length, got.join('\n')).toBe(c.want.length);
  for (const [i, w] of c.want.entries()) {
    if (typeof w === 'string') expect(got[i]).toBe(w);
    else expect(got[i]).toMatch(w);
  }
  for (const n of c.notes ?? []) expect(d.notes.join('\n')).toMatch(n);
}
