// Where a file holds data (SEEK_DATA / SEEK_HOLE, through xfs_io, which works on any
// filesystem): a wipe overwrites what was written, not the holes of a sparse image, which
// would grow a 100 GiB sparse file to 100 GiB on disk.
import { run } from './exec.js';

/** [start, end) byte ranges holding data; the whole file where the filesystem cannot tell. */
export async function dataExtents(p: string, size: number): Promise<[number, number][]> {
  let out: string;
  try {
    out = (await run('xfs_io', ['-r', '-c', 'seek -r -a 0', p], { retries: 0 })).stdout;
  } catch {
    return size ? [[0, size]] : [];
  }
  return parseSeekOutput(out, size);
}

/** xfs_io's "seek -r -a" report (DATA/HOLE offsets, in order) as data ranges. */
export function parseSeekOutput(out: string, size: number): [number, number][] {
  const marks = [...out.matchAll(/^(DATA|HOLE)\s+(\d+)/gm)].map((m) => ({ kind: m[1]!, at: Number(m[2]) }));
  const ranges: [number, number][] = [];
  marks.forEach((m, i) => {
    if (m.kind !== 'DATA') return;
    const end = Math.min(marks[i + 1]?.at ?? size, size);
    if (end > m.at) ranges.push([m.at, end]);
  });
  return ranges;
}
