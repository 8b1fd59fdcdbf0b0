// What a directory holds, as one digest: every entry under it (not following symlinks), by
// relative path, with its type, mode, owner, group and content (a file's SHA-256, a link's
// target, a device's numbers). Modification times are left out: a file touched but not
// changed does not rebuild an image. A file's digest is reused while its stat says it is the
// same file unchanged (device, inode, size, mtime and ctime), so a large tree is read once.
import { createHash } from 'node:crypto';
import { lstat, readdir, readFile, readlink } from 'node:fs/promises';
import pLimit from 'p-limit';
import path from 'node:path';
import { protofileProblem } from '../tools/protofile-names.js';
import { sha256File } from '../file-sha256.js';

export interface DirectoryManifest {
  digest: string;
  files: number;
  bytes: number;
  /** entries a filesystem cannot be made with by every tool (see tools/mkfs.ts protofileProblem) */
  spaced: string[];
}

/** Per-file digests keyed by stat, kept between plans by the caller. */
export type FileDigestCache = Map<string, string>;

const statKey = (s: { dev: bigint; ino: bigint; size: bigint; mtimeNs: bigint; ctimeNs: bigint }) => `${s.dev}:${s.ino}:${s.size}:${s.mtimeNs}:${s.ctimeNs}`;

// Small files are read whole (one call, far cheaper than a stream each), big ones streamed.
const SMALL = 8 * 1024 * 1024;

async function fileDigest(p: string, size: bigint): Promise<string> {
  if (size < SMALL)
    return createHash('sha256')
      .update(await readFile(p))
      .digest('hex');
  return sha256File(p);
}

export async function directoryManifest(dir: string, cache: FileDigestCache = new Map()): Promise<DirectoryManifest> {
  const top = await lstat(dir, { bigint: true });
  if (!top.isDirectory()) throw new Error(`${dir} is not a directory`);
  const out: DirectoryManifest = { digest: '', files: 0, bytes: 0, spaced: [] };
  // In order of the walk; files are hashed 16 at a time while the walk goes on.
  const lines: (string | Promise<string>)[] = [];
  const limit = pLimit(16);
  const line = (rel: string, s: { mode: bigint; uid: bigint; gid: bigint }, what: string) =>
    `${JSON.stringify(rel)} ${(s.mode & 0o177777n).toString(8)} ${s.uid}:${s.gid} ${what}\n`;
  lines.push(line('.', top, 'dir'));
  const walk = async (rel: string): Promise<void> => {
    const names = (await readdir(path.join(dir, rel))).sort();
    const stats = await Promise.all(names.map((n) => lstat(path.join(dir, rel, n), { bigint: true })));
    for (const [i, n] of names.entries()) {
      const r = rel ? `${rel}/${n}` : n;
      const full = path.join(dir, r);
      const s = stats[i]!;
      if (protofileProblem(n)) out.spaced.push(r);
      out.files++;
      if (s.isDirectory()) {
        lines.push(line(r, s, 'dir'));
        await walk(r);
      } else if (s.isSymbolicLink()) {
        const target = await readlink(full);
        if (/\s/.test(target) && !out.spaced.includes(r)) out.spaced.push(`${r} -> ${target}`);
        lines.push(line(r, s, `link ${JSON.stringify(target)}`));
      } else if (s.isFile()) {
        out.bytes += Number(s.size);
        const k = statKey(s);
        const known = cache.get(k);
        const digest = known
          ? Promise.resolve(known)
          : limit(() => fileDigest(full, s.size)).then((d) => {
              cache.set(k, d);
              return d;
            });
        lines.push(digest.then((d) => line(r, s, `file ${s.nlink > 1n ? `ino ${s.ino} ` : ''}${d}`)));
      } else if (s.isBlockDevice() || s.isCharacterDevice()) lines.push(line(r, s, `dev ${s.rdev}`));
      else lines.push(line(r, s, 'other'));
    }
  };
  if (/\s/.test(dir)) out.spaced.unshift(dir);
  await walk('');
  const h = createHash('sha256');
  for (const l of await Promise.all(lines)) h.update(l);
  out.digest = h.digest('hex');
  return out;
}
