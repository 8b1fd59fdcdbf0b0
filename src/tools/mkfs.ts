// Making a filesystem image from a directory's content: mkfs.ext4 -d, mkfs.btrfs --rootdir,
// and mkfs.xfs -p with a protofile written from the directory (xfsprogs 6.1 reads no
// directory itself). Ownership and modes come across; each tool into a file made beforehand.
import { lstat, readdir, readlink, rm, writeFile } from 'node:fs/promises';
import path from 'node:path';
import { runLong } from './exec.js';
import { protofileProblem } from './protofile-names.js';

import type { Filesystem } from '../reconcile/model.js';

export async function mkfsFromDirectory(fs: Filesystem, dir: string, file: string, o: { signal?: AbortSignal; protofile: string }): Promise<void> {
  switch (fs) {
    case 'ext4':
      // -F: the target is a regular file; -E root_owner unset: the root directory is copied as it is.
      await runLong('mkfs.ext4', ['-q', '-F', '-d', dir, file], { signal: o.signal });
      return;
    case 'btrfs':
      await runLong('mkfs.btrfs', ['-q', '-f', '--rootdir', dir, file], { signal: o.signal });
      return;
    case 'xfs':
      await writeFile(o.protofile, await xfsProtofile(dir), { mode: 0o600 });
      try {
        await runLong('mkfs.xfs', ['-q', '-f', '-p', o.protofile, file], { signal: o.signal });
      } finally {
        await rm(o.protofile, { force: true });
      }
      return;
  }
}

/** The entry's type and mode as a protofile spells them: "-u-755", "d--755", "l--777". */
function protoMode(s: {
  mode: number;
  isDirectory(): boolean;
  isSymbolicLink(): boolean;
  isFile(): boolean;
  isBlockDevice(): boolean;
  isCharacterDevice(): boolean;
  isFIFO(): boolean;
}): string {
  const type = s.isDirectory() ? 'd' : s.isSymbolicLink() ? 'l' : s.isBlockDevice() ? 'b' : s.isCharacterDevice() ? 'c' : s.isFIFO() ? 'p' : '-';
  return `${type}${s.mode & 0o4000 ? 'u' : '-'}${s.mode & 0o2000 ? 'g' : '-'}${(s.mode & 0o777).toString(8).padStart(3, '0')}`;
}

/** mkfs.xfs's protofile for a directory tree (names with white space cannot be written in one: refused before). */
export async function xfsProtofile(dir: string): Promise<string> {
  const unfit: string[] = [];
  if (/\s/.test(dir)) unfit.push(dir);
  const top = await lstat(dir);
  const lines = ['/dev/null', '0 0', `${protoMode(top)} ${top.uid} ${top.gid}`];
  const walk = async (d: string, depth: number): Promise<void> => {
    const pad = '  '.repeat(depth);
    for (const n of (await readdir(d)).sort()) {
      const full = path.join(d, n);
      const s = await lstat(full);
      if (protofileProblem(n)) unfit.push(path.relative(dir, full));
      const head = `${pad}${n} ${protoMode(s)} ${s.uid} ${s.gid}`;
      if (s.isDirectory()) {
        lines.push(head);
        await walk(full, depth + 1);
        lines.push(`${pad}$`);
      } else if (s.isSymbolicLink()) {
        const target = await readlink(full);
        if (/\s/.test(target)) unfit.push(`${path.relative(dir, full)} -> ${target}`);
        lines.push(`${head} ${target}`);
      } else if (s.isFile()) lines.push(`${head} ${full}`);
      else if (s.isBlockDevice() || s.isCharacterDevice()) lines.push(`${head} ${Math.floor(s.rdev / 256) & 0xfff} ${(s.rdev & 0xff) | ((s.rdev >> 12) & 0xfff00)}`);
      else if (s.isFIFO()) lines.push(head);
    }
  };
  await walk(dir, 1);
  if (unfit.length)
    throw new Error(
      `mkfs.xfs cannot copy ${unfit.slice(0, 3).join(', ')}${unfit.length > 3 ? ', …' : ''} (names and link targets with white space, or named "$"); use ext4 or btrfs`,
    );
  lines.push('$');
  return `${lines.join('\n')}\n`;
}
