// Image files as qemu-img (and their own headers) report them, with a stat-keyed cache so a
// no-op plan spawns no process.
import { constants } from 'node:fs';
import { lstat, open, readlink, stat } from 'node:fs/promises';
import path from 'node:path';
import pLimit from 'p-limit';
import * as qemuImg from '../../tools/qemu-img.js';
import { cacheable, fileSignature, type StatCache } from '../common/stat-cache.js';

/** What qemu-img (and the file's own header) says about an image file. */
export interface ObservedImage {
  path: string;
  /** qemu driver name: raw, qcow2, vpc, vhdx, vmdk, luks */
  driver: string;
  virtualSize: number;
  actualSize: number;
  clusterSize?: number;
  backing?: string;
  backingFormat?: string;
  encrypted?: 'luks' | 'aes';
  qcow2?: { compat?: string; lazyRefcounts?: boolean; compressionType?: string; refcountBits?: number; extendedL2?: boolean };
  vmdk?: { createType?: string; adapterType?: string; extents: string[] };
  vhdSubformat?: 'fixed' | 'dynamic';
  /** the path is a symlink to this (its target as the link says) */
  symlink?: string;
  /** birth: nanosecond birth time (statx); with dev and ino it tells this file from a later one at the same path */
  file: { uid: number; gid: number; mode: number; ino: number; dev: number; birth: string };
  /** a block device rather than a regular file */
  block?: boolean;
}

/** qemu-img's format-specific data, the fields read here */
interface QemuFormatSpecific {
  compat?: string;
  'lazy-refcounts'?: boolean;
  'compression-type'?: string;
  'refcount-bits'?: number;
  'extended-l2'?: boolean;
  encrypt?: { format?: 'luks' | 'aes' };
  'create-type'?: string;
  extents?: { filename: string }[];
}

const limit = pLimit(4);

/** Reads a file's first bytes without a process: VMDK descriptors and VHD cookies live there. */
async function head(p: string, bytes: number): Promise<Buffer> {
  const fh = await open(p, constants.O_RDONLY);
  try {
    const buf = Buffer.alloc(bytes);
    const { bytesRead } = await fh.read(buf, 0, bytes, 0);
    return buf.subarray(0, bytesRead);
  } finally {
    await fh.close();
  }
}

/** A fixed VHD is raw data plus a 512-byte footer at the end, so qemu's probe calls it raw. */
async function hasVhdFooter(p: string, size: number): Promise<boolean> {
  if (size < 1024) return false;
  const fh = await open(p, constants.O_RDONLY);
  try {
    const buf = Buffer.alloc(8);
    await fh.read(buf, 0, 8, size - 512);
    return buf.toString('latin1') === 'conectix';
  } finally {
    await fh.close();
  }
}

async function infoOf(p: string, reported: qemuImg.QemuImgInfo): Promise<ObservedImage> {
  const st = await stat(p, { bigint: true });
  let j = reported;
  if (j.format === 'raw' && st.isFile() && (await hasVhdFooter(p, Number(st.size)))) j = await qemuImg.info(p, 'vpc');
  const fs = (j['format-specific']?.data ?? {}) as QemuFormatSpecific;
  const obs: ObservedImage = {
    path: p,
    driver: j.format,
    virtualSize: j['virtual-size'],
    actualSize: j['actual-size'] ?? 0,
    clusterSize: j['cluster-size'],
    backing: j['full-backing-filename'] ?? j['backing-filename'],
    backingFormat: j['backing-filename-format'],
    block: st.isBlockDevice() || undefined,
    file: { uid: Number(st.uid), gid: Number(st.gid), mode: Number(st.mode) & 0o7777, ino: Number(st.ino), dev: Number(st.dev), birth: String(st.birthtimeNs) },
  };
  if (j.format === 'qcow2') {
    obs.qcow2 = {
      compat: fs.compat,
      lazyRefcounts: fs['lazy-refcounts'],
      compressionType: fs['compression-type'],
      refcountBits: fs['refcount-bits'],
      extendedL2: fs['extended-l2'],
    };
    if (fs.encrypt?.format) obs.encrypted = fs.encrypt.format;
  }
  if (j.format === 'luks') obs.encrypted = 'luks';
  if (j.format === 'vmdk') {
    const text = (await head(p, 65536)).toString('latin1');
    obs.vmdk = {
      createType: fs['create-type'],
      adapterType: /ddb\.adapterType\s*=\s*"([^"]+)"/.exec(text)?.[1],
      extents: ((fs.extents ?? []) as { filename: string }[]).map((e) => path.resolve(path.dirname(p), e.filename)).filter((f) => f !== p),
    };
  }
  if (j.format === 'vpc') {
    // A dynamic VHD starts with a copy of its footer ("conectix"); a fixed one starts with data.
    obs.vhdSubformat = (await head(p, 8)).toString('latin1') === 'conectix' ? 'dynamic' : 'fixed';
  }
  return obs;
}

/**
 * Observes many image files. qemu-img has no multi-file mode, so files whose
 * (device, inode, size, mtime, ctime) match the cache are answered from it: a no-op
 * plan spawns no process at all. The rest are read by qemu-img info, many files per shell
 * process (qemuImg.infoMany), a few such processes at a time.
 */
export async function observeImages(
  paths: string[],
  cache?: StatCache,
  /** given: a path that cannot be observed is recorded here (and left out of the result) instead of failing every path */
  errors?: Map<string, string>,
): Promise<Map<string, ObservedImage | null>> {
  const out = new Map<string, ObservedImage | null>();
  const misses: { p: string; sig: string; tag: (o: ObservedImage) => ObservedImage }[] = [];
  const guarded = async (p: string, fn: () => Promise<void>) => {
    if (!errors) return fn();
    await fn().catch((e: Error) => void errors.set(p, e.message));
  };
  await Promise.all(paths.map((p) => limit(() => guarded(p, () => fromCache(p)))));
  // Enough groups to keep four at work, of 8 to 32 files (a shell for fewer costs more than it saves).
  const per = Math.min(32, Math.max(8, Math.ceil(misses.length / 4)));
  const groups: (typeof misses)[] = [];
  for (let i = 0; i < misses.length; i += per) groups.push(misses.slice(i, i + per));
  await Promise.all(
    groups.map((g) =>
      limit(async () => {
        const reports = g.length === 1 ? [await qemuImg.info(g[0]!.p).catch((e: Error) => e)] : await qemuImg.infoMany(g.map((m) => m.p));
        await Promise.all(
          g.map((m, k) =>
            guarded(m.p, async () => {
              const r = reports[k]!;
              if (r instanceof Error) throw r;
              const obs = await infoOf(m.p, r);
              // Re-read the signature: an image written while qemu-img read it must not be cached.
              if (cacheable(m.sig) && (await fileSignature(m.p)) === m.sig) cache?.set(m.p, m.sig, obs);
              out.set(m.p, m.tag(obs));
            }),
          ),
        );
      }),
    ),
  );
  return out;

  async function fromCache(p: string): Promise<void> {
    // A symlink is reported as one (its target's stat keys the cache): whether to follow it
    // is the YAML's decision, never a default.
    const link = await lstat(p).then(
      (l) => (l.isSymbolicLink() ? readlink(p) : undefined),
      () => undefined,
    );
    const tag = (o: ObservedImage): ObservedImage => (link === undefined ? o : { ...o, symlink: link });
    const sig = await fileSignature(p);
    if (sig === undefined) return void out.set(p, link === undefined ? null : tag({ ...DANGLING, path: p }));
    if (sig === 'other:notfile') throw new Error(`${p} exists but is not a regular file or block device`);
    const hit = cacheable(sig) ? cache?.get<ObservedImage>(p, sig) : undefined;
    if (hit) return void out.set(p, tag(hit));
    misses.push({ p, sig, tag });
  }
}

/** What a symlink pointing nowhere is observed as: something is there, nothing to read. */
const DANGLING: ObservedImage = { path: '', driver: 'none', virtualSize: 0, actualSize: 0, file: { uid: 0, gid: 0, mode: 0, ino: 0, dev: 0, birth: '0' } } as ObservedImage;
