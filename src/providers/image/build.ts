// Building image files crash-safely: in a private directory beside the final path, renamed
// into place only when complete (extents first, descriptor last) and never over a file the plan
// did not see; leftovers of a killed build found and removed; deletion of only the files made.
import { randomBytes } from 'node:crypto';
import { chmod, chown, link, lstat, mkdir, readdir, rename, rm, unlink, writeFile } from 'node:fs/promises';
import path from 'node:path';
import { failpoint } from '../../failpoint.js';
import type { BootcInstall, DownloadAuth, Filesystem, Format, Permissions, Qcow2Options } from '../../reconcile/model.js';
import { processAlive } from '../../tools/exec.js';
import * as qemuImg from '../../tools/qemu-img.js';
import { buildSeed, type SeedEntry } from '../common/cloud-init.js';
import { bootcSource, downloadedSource, filesystemSource, type SourceContext } from './made-sources.js';
import { fsyncPath, identityOf, makeParents, removeFiles, removeIfSame, sameIdentity, type FileIdentity } from '../common/files.js';

/** The image as this provider builds it: the model's spec with references resolved to paths. */
export interface ImageBuild {
  path: string;
  format: Format;
  size?: number;
  qcow2?: Qcow2Options;
  vmdk?: { adapterType?: string; subformat?: string };
  vhd?: { subformat?: string };
  vhdx?: { subformat?: string };
  encryption?: { passphraseFile: string; iterTime?: number };
  permissions?: Permissions;
  source:
    | { kind: 'blank' }
    | { kind: 'convert'; path: string; driver?: string; encryption?: { passphraseFile: string } }
    | { kind: 'backing'; path: string; driver: string }
    | { kind: 'seed'; entries: SeedEntry[] }
    /** downloaded into the state directory's cache (checked against sha256), decompressed, converted */
    | { kind: 'download'; url: string; sha256: string; auth?: DownloadAuth; checksumFrom: string }
    /** a filesystem made from a directory's content (its digest as the plan saw it) */
    | { kind: 'filesystem'; dir: string; filesystem: Filesystem; digest: string }
    /** a filesystem made from a container image's root filesystem (its ID as the plan saw it) */
    | { kind: 'container'; ref: string; filesystem: Filesystem; digest: string }
    /** a bootc image installed as a bootable disk through bcvk (its ID as the plan saw it) */
    | { kind: 'bootc'; ref: string; filesystem?: Filesystem; install: BootcInstall; digest: string };
}

/**
 * What a bootc install is recorded as: the image ID, and the options that make a different
 * disk of it (a change of any is a rebuild).
 */
export function bootcIdentity(id: string, install: BootcInstall, filesystem: Filesystem | undefined): string {
  const opts = [filesystem && `fs=${filesystem}`, install.rootSize !== undefined && `root=${install.rootSize}`, ...install.kargs.map((k) => `karg=${k}`)].filter(Boolean);
  return `bootc:sha256:${id}${opts.length ? ` ${JSON.stringify(opts)}` : ''}`;
}

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
  return removeStaleBuildsIn(path.dirname(p), new Set([path.basename(p)]));
}

/**
 * Removes the build directories interrupted applies left in `dir` for images of these names
 * (one listing of the directory for all of them). A leftover is named as tempDirFor names
 * them, by a process that no longer runs, and holds the build marker — or is empty (killed
 * between making it and marking it: removing an empty directory loses nothing).
 */
// A name as tempDirFor makes them: ".NAME" TMP_MARK "PID-XXXXXXXX".
const LEFTOVER = new RegExp(`^\\.(.+)${TMP_MARK.replace(/\./g, '\\.')}(\\d+)-[0-9a-f]{8}$`);

export async function removeStaleBuildsIn(dir: string, basenames: Set<string>): Promise<string[]> {
  let names: string[];
  try {
    names = await readdir(dir);
  } catch {
    return [];
  }
  const removed: string[] = [];
  for (const n of names) {
    const m = LEFTOVER.exec(n);
    if (!m || !basenames.has(m[1]!) || processAlive(Number(m[2]))) continue;
    const full = path.join(dir, n);
    const entries = await lstat(full).then(
      (s) => (s.isDirectory() ? readdir(full) : undefined),
      () => undefined,
    );
    if (!entries || (entries.length && !entries.includes(BUILD_MARKER))) continue;
    if (
      entries.includes(BUILD_MARKER) &&
      !(await lstat(path.join(full, BUILD_MARKER)).then(
        (s) => s.isFile(),
        () => false,
      ))
    )
      continue;
    await rm(full, { recursive: true, force: true });
    removed.push(full);
  }
  return removed;
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

export interface BuildHooks {
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
  /** what downloads and filesystems are made with (the cache, progress) */
  sources?: SourceContext;
  /** the source's identity as the build read it (a directory's digest then), to record */
  onSourceRecorded?: (identity: string) => void;
}

/** A build in progress: its private directory and the file qemu-img writes there. */
export interface Scratch {
  dir: string;
  file: string;
  /** directories made for the image (recorded with it, removed with it once empty) */
  made: string[];
}

/** The private directory beside the final path, marked as a build of this process. */
export async function prepareBuild(b: ImageBuild): Promise<Scratch> {
  const made = await makeParents(path.dirname(b.path));
  const dir = tempDirFor(b.path);
  await mkdir(dir, { mode: 0o700 });
  await writeFile(path.join(dir, BUILD_MARKER), `${process.pid}\n`);
  return { dir, file: path.join(dir, path.basename(b.path)), made };
}

/**
 * Builds the image in a private directory beside its final path and renames it into
 * place only when complete, so a killed apply never leaves a half image under the
 * declared name. Replacing works the same way: the old file stays until the rename.
 */
export async function createImage(b: ImageBuild, hooks: BuildHooks = {}): Promise<string[]> {
  const sig = { signal: hooks.signal };
  const scratch = await prepareBuild(b);
  const tmp = scratch.file;
  try {
    const src = b.source;
    if (src.kind === 'backing') {
      await qemuImg.create(tmp, { ...b, backing: { path: src.path, driver: src.driver } }, sig);
    } else if (src.kind === 'blank') {
      await qemuImg.create(tmp, b, sig);
    } else if (src.kind === 'seed') {
      await buildSeed(tmp, src.entries, hooks.signal);
    } else {
      // Downloads and filesystems are made first, as files in the private directory.
      const ctx = hooks.sources;
      if (src.kind !== 'convert' && !ctx) throw new Error(`${b.path}: a ${src.kind} build needs its source context`);
      const from =
        src.kind === 'download'
          ? await downloadedSource(src, scratch.dir, ctx!)
          : src.kind === 'filesystem' || src.kind === 'container'
            ? await filesystemSource(src, b.size!, scratch.dir, ctx!)
            : src.kind === 'bootc'
              ? await bootcSource(src, b.size!, scratch.dir, ctx!)
              : { path: src.path, driver: src.driver, encryption: src.encryption };
      if ('recorded' in from && from.recorded) hooks.onSourceRecorded?.(from.recorded);
      // Import: create the target at its final size, then convert into it. This grows an
      // import in one pass for every format, including those that cannot resize later.
      const sourceSize = (await qemuImg.info(from.path, from.driver))['virtual-size'];
      // A declared size the plan could not check (the source is made by this build) must hold it.
      if (b.size !== undefined && b.size < sourceSize && src.kind === 'download')
        throw new Error(`${b.path}: size ${b.size} bytes is smaller than the download (${sourceSize} bytes); the image would lose data. Declare at least that, or no size`);
      const size = b.size ?? sourceSize;
      await qemuImg.create(tmp, { ...b, size }, sig);
      const task = ctx?.progress.begin(ctx.id, 'converting', 'percent');
      try {
        await qemuImg.convertInto(
          from,
          { path: tmp, format: b.format, encryption: b.encryption, compressed: b.qcow2?.compressed },
          { ...sig, ...(task ? { progress: (pct: number) => task.update(pct, 100) } : {}) },
        );
      } finally {
        task?.end();
      }
      // The made source is not part of the image: it goes before the build is published.
      if (from.path.startsWith(scratch.dir)) await rm(from.path, { force: true });
    }
    await publishBuild(b, scratch, hooks);
  } finally {
    await rm(scratch.dir, { recursive: true, force: true });
  }
  return scratch.made;
}

/**
 * Puts a complete build in place: permissions, fsync, the caller's intent record, then the
 * rename. The private directory is the caller's to remove (it may hold a failed build).
 */
export async function publishBuild(b: ImageBuild, scratch: Scratch, hooks: BuildHooks): Promise<void> {
  const tmp = scratch.file;
  const built = await builtFiles(scratch.dir, tmp);
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
 * Deletes the image file, if it is still the one recorded (a file put at the path since the
 * plan is left alone), and the extent files recorded with it (the same way). Returns the
 * paths left alone.
 */
export async function deleteImage(p: string, identity: FileIdentity, extents: (FileIdentity & { path: string })[] = []): Promise<string[]> {
  const kept = await removeIfSame([{ path: p, ...identity }]);
  if (kept.length) return kept;
  return removeIfSame(extents);
}
