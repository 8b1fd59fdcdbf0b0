// What a directory holds, as one digest: every entry under it (not following symlinks), by
// relative path, with its type, mode, owner, group and content (a file's SHA-256, a link's
// target, a device's numbers). Modification times are left out: a file touched but not
// changed does not rebuild an image. A file's digest is reused while its stat says it is the
// same file unchanged (device, inode, size, mtime and ctime), so a large tree is read once.
import { createHash } from 'node:crypto';
import { createReadStream } from 'node:fs';
import { lstat, readdir, readlink } from 'node:fs/promises';
import path from 'node:path';

export interface DirectoryManifest {
  digest: string;
  files: number;
  bytes: number;
  /** names a filesystem cannot be made with by every tool (xfs protofiles split on white space) */
  spaced: string[];
}

/** Per-file digests keyed by stat, kept between plans by the caller. */
export type FileDigestCache = Map<string, string>;

const statKey = (s: { dev: bigint; ino: bigint; size: bigint; mtimeNs: bigint; ctimeNs: bigint }) => `${s.dev}:${s.ino}:${s.size}:${s.mtimeNs}:${s.ctimeNs}`;

async function fileDigest(p: string): Promise<string> {
  const h = createHash('sha256');
  for await (const chunk of createReadStream(p)) h.update(chunk as Buffer);
  return h.digest('hex');
}

export async function directoryManifest(dir: string, cache: FileDigestCache = new Map()): Promise<DirectoryManifest> {
  const top = await lstat(dir, { bigint: true });
  if (!top.isDirectory()) throw new Error(`${dir} is not a directory`);
  const h = createHash('sha256');
  const out: DirectoryManifest = { digest: '', files: 0, bytes: 0, spaced: [] };
  const line = (rel: string, s: { mode: bigint; uid: bigint; gid: bigint }, what: string) =>
    h.update(`${JSON.stringify(rel)} ${(s.mode & 0o177777n).toString(8)} ${s.uid}:${s.gid} ${what}\n`);
  line('.', top, 'dir');
  const walk = async (rel: string): Promise<void> => {
    const names = (await readdir(path.join(dir, rel))).sort();
    for (const n of names) {
      const r = rel ? `${rel}/${n}` : n;
      const full = path.join(dir, r);
      const s = await lstat(full, { bigint: true });
      if (/\s/.test(n)) out.spaced.push(r);
      out.files++;
      if (s.isDirectory()) {
        line(r, s, 'dir');
        await walk(r);
      } else if (s.isSymbolicLink()) line(r, s, `link ${JSON.stringify(await readlink(full))}`);
      else if (s.isFile()) {
        const k = statKey(s);
        let d = cache.get(k);
        if (!d) {
          d = await fileDigest(full);
          cache.set(k, d);
        }
        out.bytes += Number(s.size);
        line(r, s, `file ${s.nlink > 1n ? `ino ${s.ino} ` : ''}${d}`);
      } else if (s.isBlockDevice() || s.isCharacterDevice()) line(r, s, `dev ${s.rdev}`);
      else line(r, s, 'other');
    }
  };
  await walk('');
  out.digest = h.digest('hex');
  return out;
}
