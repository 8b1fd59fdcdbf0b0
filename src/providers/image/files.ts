// Image files on a filesystem, reached through qemu-img. Observe / create / update / delete
// for one kind of object: a disk image at an absolute path.
import { randomBytes } from 'node:crypto';
import { constants } from 'node:fs';
import { chmod, chown, type FileHandle, link, lstat, mkdir, open, readdir, readlink, rename, rm, stat, unlink, writeFile } from 'node:fs/promises';
import path from 'node:path';
import pLimit from 'p-limit';
import type { Format, Permissions, Qcow2Options } from '../../reconcile/model.js';
import { processAlive } from '../../tools/exec.js';
import * as qemuImg from '../../tools/qemu-img.js';
import { DRIVER, driverOf } from '../../tools/qemu-img.js';
import { failpoint } from '../../failpoint.js';
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

export type { StatCache as ObservationCache } from '../common/stat-cache.js';

/** The image as this provider builds it: the model's spec with references resolved to paths. */
export interface ImageBuild {
  path: string;
  format: Format;
  size?: number;
  qcow2?: Qcow2Options;
  vmdk?: { adapterType?: string; subformat?: string };
  vhd?: { subformat?: string };
  vhdx?: { subformat?: string };
  encryption?: { passphraseFile: string };
  permissions?: Permissions;
  source: { kind: 'blank' } | { kind: 'convert'; path: string; driver?: string; encryption?: { passphraseFile: string } } | { kind: 'backing'; path: string; driver: string };
}

export { DRIVER };

/** The qemu driver a declared format and encryption produce (raw + LUKS is qemu's "luks"). */
export function driverFor(format: Format, encrypted: boolean): string {
  return driverOf(format, encrypted);
}

/** Formats whose qemu driver can grow an image in place. */
export function canResize(format: Format, encrypted: boolean): boolean {
  return (format === 'qcow2' || format === 'raw') && !(format === 'raw' && encrypted);
}

/**
 * How far above the requested size a format may round: qemu rounds every size up to
 * 512-byte sectors, and VHD images made by other tools round up to a CHS geometry
 * (16 heads × 255 sectors). Within this tolerance an image is in sync.
 */
export function sizeTolerance(format: Format, observedDriver?: string): number {
  // When the format changes, the existing image was rounded by its own format's rules.
  return format === 'vhd' || observedDriver === 'vpc' ? 16 * 255 * 512 + 512 : 1024;
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

async function infoOf(p: string): Promise<ObservedImage> {
  const st = await stat(p, { bigint: true });
  let j = await qemuImg.info(p);
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
 * plan spawns no process at all. The rest run at most four at a time.
 */
export async function observeImages(
  paths: string[],
  cache?: StatCache,
  /** given: a path that cannot be observed is recorded here (and left out of the result) instead of failing every path */
  errors?: Map<string, string>,
): Promise<Map<string, ObservedImage | null>> {
  const out = new Map<string, ObservedImage | null>();
  await Promise.all(
    paths.map((p) =>
      limit(async () => {
        if (!errors) return observeOne(p);
        await observeOne(p).catch((e: Error) => void errors.set(p, e.message));
      }),
    ),
  );
  return out;

  async function observeOne(p: string): Promise<void> {
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
    const obs = await infoOf(p);
    // Re-read the signature: an image written while qemu-img read it must not be cached.
    if (cacheable(sig) && (await fileSignature(p)) === sig) cache?.set(p, sig, obs);
    out.set(p, tag(obs));
  }
}

/** What a symlink pointing nowhere is observed as: something is there, nothing to read. */
const DANGLING: ObservedImage = { path: '', driver: 'none', virtualSize: 0, actualSize: 0, file: { uid: 0, gid: 0, mode: 0, ino: 0, dev: 0, birth: '0' } } as ObservedImage;

const TMP_MARK = '.reconcile-';

function tempDirFor(p: string): string {
  return path.join(path.dirname(p), `.${path.basename(p)}${TMP_MARK}${process.pid}-${randomBytes(4).toString('hex')}`);
}

// Written into every build directory when it is made: only a directory holding it (and
// named exactly as tempDirFor names them) is ever removed as a leftover — never a user's
// entry that merely looks like one.
const BUILD_MARKER = '.virt-reconcile-build';

/** Removes build directories an interrupted apply left next to `p` (their process is gone). */
export async function removeStaleBuilds(p: string): Promise<string[]> {
  const dir = path.dirname(p);
  const prefix = `.${path.basename(p)}${TMP_MARK}`;
  let names: string[];
  try {
    names = await readdir(dir);
  } catch {
    return [];
  }
  const removed: string[] = [];
  for (const n of names) {
    if (!n.startsWith(prefix)) continue;
    const m = /^(\d+)-[0-9a-f]{8}$/.exec(n.slice(prefix.length));
    if (!m || processAlive(Number(m[1]))) continue;
    const full = path.join(dir, n);
    const isBuild =
      (await lstat(full).then(
        (s) => s.isDirectory(),
        () => false,
      )) &&
      (await lstat(path.join(full, BUILD_MARKER)).then(
        (s) => s.isFile(),
        () => false,
      ));
    if (!isBuild) continue;
    await rm(full, { recursive: true, force: true });
    removed.push(full);
  }
  return removed;
}

async function fsyncPath(p: string, flags = constants.O_RDONLY): Promise<void> {
  const fh = await open(p, flags);
  try {
    await fh.sync();
  } finally {
    await fh.close();
  }
}

async function applyPermissions(files: string[], perm?: Permissions): Promise<void> {
  if (!perm) return;
  for (const f of files) {
    if (perm.owner !== undefined || perm.group !== undefined) {
      const st = await lstat(f);
      await chown(f, perm.owner ?? st.uid, perm.group ?? st.gid);
    }
    if (perm.mode !== undefined) await chmod(f, perm.mode);
  }
}

/**
 * Builds the image in a private directory beside its final path and renames it into
 * place only when complete, so a killed apply never leaves a half image under the
 * declared name. Replacing works the same way: the old file stays until the rename.
 */
export interface FileIdentity {
  ino: number;
  dev: number;
  birth: string;
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

const identityFrom = (st: { ino: bigint; dev: bigint; birthtimeNs: bigint }): FileIdentity => ({ ino: Number(st.ino), dev: Number(st.dev), birth: String(st.birthtimeNs) });

/** Same device, inode and birth time: the very same file, not one that took its name. */
export const sameIdentity = (a: FileIdentity, b: FileIdentity) => a.ino === b.ino && a.dev === b.dev && a.birth === b.birth;

async function identityOf(p: string): Promise<FileIdentity> {
  return identityFrom(await stat(p, { bigint: true }));
}

/** The identity of what is at p itself (a symlink's own, not its target's), or undefined. */
export async function lstatIdentity(p: string): Promise<FileIdentity | undefined> {
  return lstat(p, { bigint: true }).then(identityFrom, () => undefined);
}

/** mkdir -p, saying which part of the path is in the way instead of a bare EEXIST. */
async function makeParents(dir: string): Promise<void> {
  try {
    await mkdir(dir, { recursive: true });
  } catch (e) {
    const code = (e as NodeJS.ErrnoException).code;
    if (code !== 'EEXIST' && code !== 'ENOTDIR') throw e;
    let p = dir;
    while (
      p !== '/' &&
      !(await lstat(p).then(
        (s) => !s.isDirectory(),
        () => false,
      ))
    )
      p = path.dirname(p);
    throw new Error(`cannot make directory ${dir}: ${p} is a file, not a directory`);
  }
}

export async function createImage(
  b: ImageBuild,
  hooks: {
    /**
     * Called when the build is complete, before it is renamed into place, with the identity
     * the published file will have (a rename keeps inode and birth time) and its extents'
     * final paths: intent recorded here survives a crash between the rename and the caller's
     * own record.
     */
    beforePublish?: (id: FileIdentity & { extents: (FileIdentity & { path: string })[] }) => Promise<void>;
    /** aborting it stops the build (qemu-img is terminated, the private directory removed) */
    signal?: AbortSignal;
    /** a replace: the file (and extents) the plan saw at the path, the only ones it may replace */
    replaces?: FileIdentity & { extents: string[] };
  } = {},
): Promise<void> {
  const sig = { signal: hooks.signal };
  await makeParents(path.dirname(b.path));
  const tmpDir = tempDirFor(b.path);
  await mkdir(tmpDir, { mode: 0o700 });
  await writeFile(path.join(tmpDir, BUILD_MARKER), `${process.pid}\n`);
  const tmp = path.join(tmpDir, path.basename(b.path));
  try {
    const src = b.source;
    if (src.kind === 'backing') {
      await qemuImg.create(tmp, { ...b, backing: { path: src.path, driver: src.driver } }, sig);
    } else if (src.kind === 'blank') {
      await qemuImg.create(tmp, b, sig);
    } else {
      // Import: create the target at its final size, then convert into it. This grows an
      // import in one pass for every format, including those that cannot resize later.
      const size = b.size ?? (await qemuImg.info(src.path))['virtual-size'];
      await qemuImg.create(tmp, { ...b, size }, sig);
      await qemuImg.convertInto(src, { path: tmp, format: b.format, encryption: b.encryption, compressed: b.qcow2?.compressed }, sig);
    }
    const built = await builtFiles(tmpDir, tmp);
    // Private unless declared otherwise: an image holds a guest's data (libvirt's dynamic
    // ownership gives QEMU access when a domain starts).
    await applyPermissions(built, { ...b.permissions, mode: b.permissions?.mode ?? 0o600 });
    for (const f of built) await fsyncPath(f);
    if (hooks.beforePublish) {
      const extents = await Promise.all(built.filter((f) => f !== tmp).map(async (f) => ({ path: path.join(path.dirname(b.path), path.basename(f)), ...(await identityOf(f)) })));
      await hooks.beforePublish({ ...(await identityOf(tmp)), extents });
    }
    // Extents first, the descriptor/main file last: the declared name appears only complete.
    // Nothing found at a final name is ever replaced, unless it is the very file a replace
    // was planned against: a file someone put there meanwhile (or another apply's build) wins.
    const published: string[] = [];
    try {
      for (const f of built.filter((f) => f !== tmp)) {
        const dst = path.join(path.dirname(b.path), path.basename(f));
        if (hooks.replaces?.extents.includes(dst)) await rename(f, dst);
        else await publishNew(f, dst);
        published.push(dst);
      }
      if (published.length) failpoint('image-extents-published');
      if (hooks.replaces) {
        const now = await identityOf(b.path).catch(() => undefined);
        if (now && !sameIdentity(now, hooks.replaces)) {
          throw new Error(`${b.path} changed since the plan (another file is there now); it is left as it is and this build is discarded`);
        }
        await rename(tmp, b.path);
      } else await publishNew(tmp, b.path);
    } catch (e) {
      await removeFiles(published.filter((f) => !hooks.replaces?.extents.includes(f)));
      throw e;
    }
    await fsyncPath(path.dirname(b.path));
  } finally {
    await rm(tmpDir, { recursive: true, force: true });
  }
}

/**
 * Puts src at dst only if nothing is there: link() fails with EEXIST instead of replacing, as
 * RENAME_NOREPLACE would. Filesystems without hard links get an existence check, then rename.
 */
async function publishNew(src: string, dst: string): Promise<void> {
  try {
    await link(src, dst);
  } catch (e) {
    const code = (e as NodeJS.ErrnoException).code;
    if (code === 'EEXIST') throw new Error(`${dst} appeared while the image was being built (someone else's file); it is left as it is and this build is discarded`);
    if (code !== 'EPERM' && code !== 'ENOTSUP' && code !== 'EOPNOTSUPP' && code !== 'EMLINK') throw e;
    if (
      await lstat(dst).then(
        () => true,
        () => false,
      )
    )
      throw new Error(`${dst} appeared while the image was being built; it is left as it is and this build is discarded`);
    await rename(src, dst);
    return;
  }
  await unlink(src);
}

async function builtFiles(dir: string, main: string): Promise<string[]> {
  const names = (await readdir(dir)).filter((n) => n !== BUILD_MARKER);
  return [main, ...names.map((n) => path.join(dir, n)).filter((f) => f !== main)];
}

/**
 * Changes owner, group and mode through a descriptor opened without following a symlink
 * (unless told to), and only if it is still the file the plan saw: a file or link swapped in
 * at the path between plan and apply is never changed.
 */
export async function setPermissions(p: string, perm: Permissions, opts: { expect?: FileIdentity; followSymlink?: boolean } = {}): Promise<void> {
  let fh: FileHandle;
  try {
    fh = await open(p, constants.O_RDONLY | constants.O_NONBLOCK | (opts.followSymlink ? 0 : constants.O_NOFOLLOW));
  } catch (e) {
    if ((e as NodeJS.ErrnoException).code === 'ELOOP') throw new Error(`${p} is now a symlink; not followed, nothing changed`);
    throw e;
  }
  try {
    const st = await fh.stat({ bigint: true });
    if (opts.expect && !sameIdentity(identityFrom(st), opts.expect)) throw new Error(`${p} is no longer the file the plan saw (another file took its place); nothing changed`);
    if (perm.owner !== undefined || perm.group !== undefined) await fh.chown(perm.owner ?? Number(st.uid), perm.group ?? Number(st.gid));
    if (perm.mode !== undefined) await fh.chmod(perm.mode);
  } finally {
    await fh.close();
  }
}

/** Throws unless p is still the file the plan saw (and not a symlink, unless followed). */
export async function checkStillSame(p: string, expect: FileIdentity, followSymlink = false): Promise<void> {
  const l = await lstat(p, { bigint: true }).catch(() => undefined);
  if (!l) throw new Error(`${p} is gone since the plan; nothing changed`);
  if (l.isSymbolicLink() && !followSymlink) throw new Error(`${p} is now a symlink; not followed, nothing changed`);
  const st = l.isSymbolicLink() ? await stat(p, { bigint: true }) : l;
  if (!sameIdentity(identityFrom(st), expect)) throw new Error(`${p} is no longer the file the plan saw (another file took its place); nothing changed`);
}

/** Identities of files (extents at creation), so that only those very files are ever deleted. */
export async function identitiesOf(paths: string[]): Promise<(FileIdentity & { path: string })[]> {
  return Promise.all(paths.map(async (p) => ({ path: p, ...(await identityOf(p)) })));
}

/**
 * Deletes the files that are still the ones recorded (same device, inode and birth time);
 * returns those left alone because another file took the name, or no identity was recorded.
 */
export async function removeIfSame(files: (FileIdentity & { path: string })[]): Promise<string[]> {
  const kept: string[] = [];
  for (const f of files) {
    // lstat: a symlink put at the path is not the file, whatever it points to.
    const now = await lstatIdentity(f.path);
    if (!now) continue;
    if (f.birth === '0' || !sameIdentity(now, f)) kept.push(f.path);
    else await removeFiles([f.path]);
  }
  return kept;
}

/**
 * Deletes the image file, if it is still the one recorded (a file put at the path since the
 * plan is left alone), and the extent files recorded with it (the same way). Returns the
 * paths left alone.
 */
export async function deleteImage(p: string, identity: FileIdentity, extents: (FileIdentity & { path: string })[] = []): Promise<string[]> {
  const kept = await removeIfSame([{ path: p, ...identity }]);
  if (kept.length) return kept;
  return removeIfSame(extents);
}

/** Unlinks files; one already gone is not an error. */
export async function removeFiles(files: string[]): Promise<void> {
  for (const f of files) {
    try {
      await unlink(f);
    } catch (e) {
      if ((e as NodeJS.ErrnoException).code !== 'ENOENT') throw e;
    }
  }
}
