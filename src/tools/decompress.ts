// Decompressing downloaded images (xz, gzip, zstd, bzip2): the format told by the file's
// first bytes, not its name; each through its own tool, reading the file on standard input
// so that how far it has read can be shown.
import { open } from 'node:fs/promises';
import { runLong } from './exec.js';

export type Compression = 'xz' | 'gzip' | 'zstd' | 'bzip2';

const MAGIC: [Compression, number[]][] = [
  ['xz', [0xfd, 0x37, 0x7a, 0x58, 0x5a, 0x00]],
  ['gzip', [0x1f, 0x8b]],
  ['zstd', [0x28, 0xb5, 0x2f, 0xfd]],
  ['bzip2', [0x42, 0x5a, 0x68]],
];

/** The compression of a file, from its first bytes; undefined if it is not compressed. */
export async function compressionOf(file: string): Promise<Compression | undefined> {
  const fh = await open(file, 'r');
  try {
    const b = Buffer.alloc(8);
    const { bytesRead } = await fh.read(b, 0, 8, 0);
    return MAGIC.find(([, m]) => bytesRead >= m.length && m.every((x, i) => b[i] === x))?.[0];
  } finally {
    await fh.close();
  }
}

const TOOL: Record<Compression, string> = { xz: 'xz', gzip: 'gzip', zstd: 'zstd', bzip2: 'bzip2' };

/** Writes the decompressed content of `input` to `output`; `onRead`: how many bytes of the input were read so far. */
export async function decompress(input: string, output: string, c: Compression, o: { signal?: AbortSignal; onRead?: (bytes: number) => void } = {}): Promise<void> {
  // -d -c: to standard output; -q: no notices mixed into errors. zstd also needs --no-progress.
  const args = c === 'zstd' ? ['-d', '-c', '-q', '--no-progress'] : ['-d', '-c', '-q'];
  await runLong(TOOL[c], args, { inputFile: input, outputFile: output, signal: o.signal, onInput: o.onRead });
}
