// Backups copied to a directory on another host over SSH (sftp; see tools/sftp.ts): the host
// key is checked (known_hosts), no password is ever asked (batch mode).
import type { OffsiteTarget } from '../reconcile/model.js';
import { sftpBatch } from '../tools/sftp.js';
import type { OffsiteStore } from './store.js';

export function sshStore(t: Extract<OffsiteTarget, { kind: 'ssh' }>): OffsiteStore {
  const run = (commands: string[]) => sftpBatch(t, commands);
  const q = (p: string) => `"${p}"`; // paths hold no quotes, backslashes or newlines (validate.ts)
  const remote = (name: string) => `${t.path}/${name}`;
  let made = false;
  return {
    url: t.url,
    async put(local, name) {
      if (/["\\\n]/.test(local)) throw new Error(`${local}: a path with quotes, backslashes or newlines cannot be sent over sftp`);
      // The directory, each level (-mkdir: one that exists is no error); written under a
      // temporary name and renamed, so a copy is complete once it is there.
      const dirs = made
        ? []
        : t.path
            .split('/')
            .filter(Boolean)
            .map((_, i, a) => `-mkdir ${q(`/${a.slice(0, i + 1).join('/')}`)}`);
      await run([...dirs, `put ${q(local)} ${q(`${remote(name)}.partial`)}`, `-rm ${q(remote(name))}`, `rename ${q(`${remote(name)}.partial`)} ${q(remote(name))}`]);
      made = true;
    },
    async get(name, local) {
      if (/["\\\n]/.test(local)) throw new Error(`${local}: a path with quotes, backslashes or newlines cannot be fetched over sftp`);
      await run([`get ${q(remote(name))} ${q(`${local}.partial`)}`]);
      const { rename } = await import('node:fs/promises');
      await rename(`${local}.partial`, local);
    },
    async remove(name) {
      await run([`-rm ${q(remote(name))}`]);
    },
  };
}
