// Volumes in libvirt storage pools: vol-create from XML, vol-create-from for copies,
// vol-upload for imports, vol-resize to grow, vol-delete. Observation is part of the
// pools' batch (vol-dumpxml of every volume of interest in one virsh process).
import { writeFile } from 'node:fs/promises';
import path from 'node:path';
import type { Format, Permissions, Qcow2Options } from '../reconcile/model.js';
import { createImage } from '../providers/image/build.js';
import { DRIVER } from '../providers/image/formats.js';
import type { SeedEntry } from '../providers/common/cloud-init.js';
import { withTempDir } from './scratch.js';
import { attr, buildXml, bytes, list, parseXml, text, type XmlNode } from './xml.js';
import { permissionsElement } from './libvirt-pool.js';
import type { Virsh } from './virsh.js';
import { TRANSIENT_RETRIES, transientDelay } from './exec.js';
import { failpoint } from '../failpoint.js';

/** libvirt names volume formats as qemu's drivers do (vhd is vpc). */
export const VOL_FORMAT: Record<Format, string> = DRIVER;

export interface ObservedVolume {
  pool: string;
  name: string;
  key: string;
  path: string;
  type: string;
  /** libvirt format name: raw, qcow2, vpc, vmdk, ... (block volumes: none/raw) */
  format?: string;
  capacity: number;
  allocation: number;
  backing?: string;
  backingFormat?: string;
  compat?: string;
  lazyRefcounts?: boolean;
  permissions?: { mode?: number; owner?: number; group?: number };
  /** file volumes: the file's birth time, which tells it from a file put at its path later */
  birth?: string;
  /** file volumes: the path is a symlink to this */
  symlink?: string;
}

export interface VolumeBuild {
  pool: string;
  name: string;
  format: Format;
  capacity: number;
  /** block pools (logical, disk, rbd) take no format element */
  fileBased: boolean;
  qcow2?: Qcow2Options;
  permissions?: Permissions;
  backing?: { path: string; format: string };
  /** LUKS (in qcow2, or raw): libvirt's qemu-img takes the passphrase from the secret of this usage (the volume's path) */
  encryption?: { secretUsage: string };
  source: { kind: 'blank' } | { kind: 'volume'; pool: string; name: string } | { kind: 'file'; path: string; driver?: string } | { kind: 'seed'; entries: SeedEntry[] };
}

export function volumeReadCommands(vols: { pool: string; name: string }[]): string[][] {
  return vols.map((v) => ['vol-dumpxml', '--pool', v.pool, v.name]);
}

export function parseVolumeXml(pool: string, xml: string): ObservedVolume {
  const v = list(parseXml(xml).volume)[0] ?? {};
  const t = v.target ?? {};
  const perms = t.permissions;
  const num = (n: XmlNode | undefined) => (text(n) !== undefined ? Number(text(n)) : undefined);
  return {
    pool,
    name: text(v.name) ?? '',
    key: text(v.key) ?? '',
    path: text(t.path) ?? '',
    type: attr(v, 'type') ?? 'file',
    // A dir pool probes file content, and calls a raw file holding an ISO 9660 filesystem
    // "iso": it is raw for every purpose here (qemu reads it as raw, and raw is what was made).
    format: attr(t.format, 'type') === 'iso' ? 'raw' : attr(t.format, 'type'),
    capacity: bytes(v.capacity) ?? 0,
    allocation: bytes(v.allocation) ?? 0,
    backing: text(v.backingStore?.path),
    backingFormat: attr(v.backingStore?.format, 'type'),
    compat: text(t.compat),
    lazyRefcounts: t.features ? 'lazy_refcounts' in t.features : undefined,
    permissions: perms ? { mode: text(perms.mode) !== undefined ? parseInt(text(perms.mode)!, 8) : undefined, owner: num(perms.owner), group: num(perms.group) } : undefined,
  };
}

export function volumeXml(b: VolumeBuild): string {
  const q = b.qcow2 ?? {};
  // Without <allocation>, libvirt allocates the whole capacity: say 0 unless preallocating.
  const full = q.preallocation === 'falloc' || q.preallocation === 'full' || (b.format === 'raw' && q.preallocation === 'metadata');
  const qcow2 = b.format === 'qcow2';
  return buildXml({
    volume: {
      name: b.name,
      capacity: { '@unit': 'bytes', '#text': b.capacity },
      allocation: { '@unit': 'bytes', '#text': full || !b.fileBased ? b.capacity : 0 },
      target: {
        format: b.fileBased ? { '@type': VOL_FORMAT[b.format] } : undefined,
        compat: qcow2 ? (q.compat ?? '1.1') : undefined,
        clusterSize: qcow2 && q.clusterSize ? { '@unit': 'B', '#text': q.clusterSize } : undefined,
        features: qcow2 && q.lazyRefcounts ? { lazy_refcounts: '' } : undefined,
        permissions: b.fileBased ? permissionsElement(b.permissions) : undefined,
        encryption: b.encryption ? { '@format': 'luks', secret: { '@type': 'passphrase', '@usage': b.encryption.secretUsage } } : undefined,
      },
      backingStore: b.backing ? { path: b.backing.path, format: { '@type': b.backing.format } } : undefined,
    },
  });
}

/**
 * libvirt runs qemu-img to make an encrypted volume, and qemu's LUKS key derivation sometimes
 * fails with this message on virtual machines (a transient CPU-time reading): tried again then.
 * A failed create made no file.
 */
async function withTransientRetry<T>(fn: () => Promise<T>): Promise<T> {
  for (let attempt = 0; ; attempt++) {
    try {
      return await fn();
    } catch (e) {
      if (attempt >= TRANSIENT_RETRIES || !/Unable to get accurate CPU usage/.test((e as Error).message)) throw e;
      await new Promise((r) => setTimeout(r, transientDelay(attempt)));
    }
  }
}

/**
 * libvirt preallocates a qcow2 volume only when asked (--prealloc-metadata): then with falloc
 * if the XML's allocation is its capacity (what volumeXml writes for falloc), else metadata.
 */
function preallocFlag(b: VolumeBuild): string[] {
  const p = b.qcow2?.preallocation;
  return b.format === 'qcow2' && (p === 'metadata' || p === 'falloc') ? ['--prealloc-metadata'] : [];
}

/**
 * Creates the volume. Blank and backing volumes come from vol-create; copies of another
 * volume from vol-create-from (libvirt converts); imports of a file are built as image files
 * are (at the volume's format, options and final size) in a scratch file, then streamed in
 * with vol-upload --sparse.
 */
export async function createVolume(
  v: Virsh,
  b: VolumeBuild,
  hooks: {
    created?: (vol: { key: string; path: string }) => Promise<void>;
    /** stops an import's conversion and upload (the volume is left building, and rebuilt) */
    signal?: AbortSignal;
  } = {},
): Promise<ObservedVolume> {
  const prealloc = preallocFlag(b);
  const dump = ['vol-dumpxml', '--pool', b.pool, b.name];
  return withTempDir(async (dir) => {
    // The volume provider builds a seed and hands it over as a file.
    if (b.source.kind === 'seed') throw new Error(`volume ${b.name}: a cloud-init seed must be built before it is created`);
    const xmlFile = path.join(dir, 'vol.xml');
    await writeFile(xmlFile, volumeXml(b), { mode: 0o600 });
    const src = b.source;
    // Create and read back in one virsh process: half the connections for a large apply.
    if (src.kind === 'volume') {
      const [, xml] = await v.sequence([['vol-create-from', b.pool, xmlFile, src.name, '--inputpool', src.pool, ...prealloc], dump]);
      return parseVolumeXml(b.pool, xml!);
    }
    if (src.kind === 'blank' && b.fileBased && b.encryption) {
      await withTransientRetry(() => v.exec(['vol-create', b.pool, xmlFile, ...prealloc]));
      return parseVolumeXml(b.pool, await v.exec(dump));
    }
    if (src.kind === 'blank' && b.fileBased) {
      const [, xml] = await v.sequence([['vol-create', b.pool, xmlFile, ...prealloc], dump]);
      failpoint('volume-made');
      return parseVolumeXml(b.pool, xml!);
    }
    try {
      await v.exec(['vol-create', b.pool, xmlFile, ...prealloc]);
    } catch (e) {
      // Disk pools: libvirt re-reads the partition table right after parted, and without
      // udev the new partition may not be visible yet. Look again before calling it failed.
      // Never for file pools: there a failed vol-create means the name is taken by a file
      // reconcile did not make, which must not be taken for ours.
      if (b.fileBased) throw e;
      await v.exec(['pool-refresh', b.pool]).catch(() => undefined);
      const made = await v.exec(['vol-info', '--pool', b.pool, b.name, '--bytes']).catch(() => undefined);
      if (!made || Number(/Capacity:\s+(\d+)/.exec(made)?.[1] ?? 0) < b.capacity * 0.99) throw e;
    }
    if (src.kind === 'file') {
      try {
        // The volume exists, still blank: say so before the long import fills it.
        const made = parseVolumeXml(b.pool, await v.exec(dump));
        await hooks.created?.({ key: made.key, path: made.path });
        const scratch = path.join(dir, 'upload');
        await createImage(
          {
            path: scratch,
            format: b.fileBased ? b.format : 'raw',
            size: b.capacity,
            // The volume itself is preallocated by libvirt; the scratch file needs no allocation.
            qcow2: b.fileBased && b.qcow2 ? { ...b.qcow2, preallocation: undefined } : undefined,
            source: { kind: 'convert', path: src.path, driver: src.driver },
          },
          { signal: hooks.signal },
        );
        await v.exec(['vol-upload', '--pool', b.pool, b.name, scratch, '--sparse'], { signal: hooks.signal });
      } catch (e) {
        // Never leave a half-imported volume under the declared name.
        await v.exec(['vol-delete', '--pool', b.pool, b.name]).catch(() => undefined);
        throw e;
      }
    }
    return parseVolumeXml(b.pool, await v.exec(dump));
  });
}

/** One volume of createBlankVolumes: what libvirt made, why it did not, or not tried (stopped). */
export type CreateOutcome = { ok: true; volume: ObservedVolume } | { ok: false; error: string } | { ok: false; notRun: true };

/**
 * Creates many blank file volumes of one pool in one virsh process, one at a time: the cost of
 * a virsh process and its connection is paid once instead of per volume, and each create is
 * sent only once `before(i)` has resolved (the caller records its intent there), so at any
 * moment at most one create is under way, as when each has a process of its own. The volumes
 * made are read back together at the end.
 */
export async function createBlankVolumes(
  v: Virsh,
  builds: VolumeBuild[],
  hooks: { before: (index: number) => Promise<boolean>; after: (index: number, error: string | undefined) => Promise<void> },
): Promise<CreateOutcome[]> {
  return withTempDir(async (dir) => {
    const steps = await Promise.all(
      builds.map(async (b, i) => {
        const xmlFile = path.join(dir, `vol-${i}.xml`);
        await writeFile(xmlFile, volumeXml(b), { mode: 0o600 });
        const prealloc = preallocFlag(b);
        return [['vol-create', b.pool, xmlFile, ...prealloc]];
      }),
    );
    const errors = await v.stepwise(steps, { before: hooks.before, after: (i, e) => hooks.after(i, e.length ? createFailure(e) : undefined) });
    const made = builds.flatMap((b, i) => (errors[i]?.length === 0 ? [{ i, pool: b.pool, name: b.name }] : []));
    const xml = made.length ? await v.batch(volumeReadCommands(made)) : [];
    const out: CreateOutcome[] = builds.map((_, i) => (errors[i] === undefined ? { ok: false, notRun: true } : { ok: false, error: createFailure(errors[i]!) }));
    made.forEach((m, k) => {
      out[m.i] = xml[k] ? { ok: true, volume: parseVolumeXml(m.pool, xml[k]!) } : { ok: false, error: `volume ${m.name} was made in pool ${m.pool}, then could not be read back` };
    });
    return out;
  });
}

/** Why a create failed: libvirt's cause, without virsh's framing (its scratch XML file) or the read-back that followed. */
function createFailure(errors: string[]): string {
  const cause = errors.filter((l) => !/^Failed to create vol from |^failed to get vol |^Storage volume not found/.test(l));
  return (cause.length ? cause : errors).join('; ');
}

export async function resizeVolume(v: Virsh, pool: string, name: string, capacity: number, allocate: boolean): Promise<void> {
  await v.exec(['vol-resize', '--pool', pool, name, String(capacity), ...(allocate ? ['--allocate'] : [])]);
}

export async function volumePath(v: Virsh, pool: string, name: string): Promise<string> {
  return (await v.exec(['vol-path', '--pool', pool, name])).trim();
}

/** Overwrites the volume's data (libvirt's vol-wipe; the algorithms other than zero run scrub). */
export async function wipeVolume(v: Virsh, pool: string, name: string, algorithm: string): Promise<void> {
  await v.exec(['vol-wipe', '--pool', pool, name, '--algorithm', algorithm]);
}

export async function deleteVolume(v: Virsh, pool: string, name: string): Promise<void> {
  await v.exec(['vol-delete', '--pool', pool, name]);
}
