// ISO 9660 images (cloud-init NoCloud seeds) through xorriso, or genisoimage where that is
// what the host has: Rock Ridge and Joliet names, so "user-data" is read as written.
import { CommandError, run } from './exec.js';

/** A file put into the image: its name there, and where its content is now. */
export interface IsoEntry {
  name: string;
  path: string;
}

// mkisofs graft points are NAME=PATH: a "=" or "\" in either must be escaped.
const graftEscape = (s: string) => s.replace(/[\\=]/g, (c) => `\\${c}`);

/** Writes an ISO labelled `label` holding the entries to `output` (which must not exist yet). */
export async function makeIso(output: string, label: string, entries: IsoEntry[], opts: { signal?: AbortSignal } = {}): Promise<void> {
  const args = ['-output', output, '-volid', label, '-joliet', '-rock', '-graft-points', ...entries.map((e) => `${graftEscape(e.name)}=${graftEscape(e.path)}`)];
  const tools: [string, string[]][] = [
    ['xorriso', ['-as', 'genisoimage', '-quiet', ...args]],
    ['genisoimage', ['-quiet', ...args]],
  ];
  for (const [cmd, argv] of tools) {
    try {
      await run(cmd, argv, { signal: opts.signal, retries: 0 });
      return;
    } catch (e) {
      // Not installed: try the other; any other failure is the answer.
      if (!(e instanceof CommandError) || !/ENOENT/.test(e.stderr)) throw e;
    }
  }
  throw new Error('building an ISO image needs xorriso or genisoimage; install one (Debian: apt install xorriso)');
}
