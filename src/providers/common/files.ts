// Files changed safely: identity (device, inode, birth time) so that only the very file a
// plan saw is ever changed or deleted, permissions through a descriptor that does not follow
// symlinks, fsync, and mkdir -p that says what is in the way. Shared by every kind with files.
import { constants } from 'node:fs';
import { lstat, mkdir, open, readlink, rmdir, stat, unlink, type FileHandle } from 'node:fs/promises';
import path from 'node:path';
import type { Permissions } from '../../reconcile/model.js';

/** A file, told apart from any later file at the same path. */
export interface FileIdentity {
  ino: number;
  dev: number;
  birth: string;
}

export const identityFrom = (st: { ino: bigint; dev: bigint; birthtimeNs: bigint }): FileIdentity => ({ ino: Number(st.ino), dev: Number(st.dev), birth: String(st.birthtimeNs) });

/** Same device, inode and birth time: the very same file, not one that took its name. */
export const sameIdentity = (a: FileIdentity, b: FileIdentity) => a.ino === b.ino && a.dev === b.dev && a.birth === b.birth;

export async function identityOf(p: string): Promise<FileIdentity> {
  return identityFrom(await stat(p, { bigint: true }));
}

/** A file's (or directory's) birth time (ns), through symlinks, or undefined if it is gone: with the path, it names one file. */
export function birthOf(p: string): Promise<string | undefined> {
  return identityOf(p).then(
    (id) => id.birth,
    () => undefined,
  );
}

/** The identity of what is at p itself (a symlink's own, not its target's), or undefined. */
export async function lstatIdentity(p: string): Promise<FileIdentity | undefined> {
  return lstat(p, { bigint: true }).then(identityFrom, () => undefined);
}

/**
 * What is at a path, through symlinks as libvirt follows them: nothing (also when a parent is
 * a file), a directory, or something else — a file, or a symlink that leads nowhere.
 */
export async function whatIsAt(p: string): Promise<'missing' | 'directory' | 'other'> {
  try {
    return (await stat(p)).isDirectory() ? 'directory' : 'other';
  } catch (e) {
    const code = (e as NodeJS.ErrnoException).code;
    if (code !== 'ENOENT' && code !== 'ENOTDIR') throw e;
    return (await lstat(p).catch(() => undefined)) ? 'other' : 'missing';
  }
}

/**
 * What is at a path where a volume is about to be made, said for a refusal, or undefined if
 * nothing is. libvirt does not list a dangling symlink as a volume, and would create the file
 * where it points — outside the pool; a file put there meanwhile is someone else's.
 */
export async function occupant(p: string): Promise<string | undefined> {
  const l = await lstat(p).catch(() => undefined);
  if (!l) return undefined;
  if (l.isSymbolicLink()) return `a symlink to ${await readlink(p).catch(() => '?')}`;
  return l.isDirectory() ? 'a directory' : 'a file';
}

export async function fsyncPath(p: string, flags = constants.O_RDONLY): Promise<void> {
  const fh = await open(p, flags);
  try {
    await fh.sync();
  } finally {
    await fh.close();
  }
}

/** mkdir -p, saying which part of the path is in the way instead of a bare EEXIST. */
/** Returns the directories it made, outermost first (none if the directory existed). */
export async function makeParents(dir: string): Promise<string[]> {
  try {
    const first = await mkdir(dir, { recursive: true });
    if (first === undefined) return [];
    const made = [dir];
    while (made[0] !== first && made[0] !== path.dirname(made[0]!)) made.unshift(path.dirname(made[0]!));
    return made;
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

/**
 * Removes directories that are empty, innermost first (`dirs` outermost first); one holding
 * anything stays, and so do its parents — unless `each`: the list is not one chain, so every
 * directory is tried.
 */
export async function removeEmptyDirs(dirs: string[], opts: { each?: boolean } = {}): Promise<void> {
  for (const d of [...dirs].reverse()) {
    try {
      await rmdir(d);
    } catch (e) {
      if ((e as NodeJS.ErrnoException).code === 'ENOENT' || opts.each) continue;
      return;
    }
  }
}
