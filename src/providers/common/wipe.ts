// Overwriting a file before reconcile deletes it (`wipe:`): an image file, or the file of a
// volume in a file pool. Through a descriptor opened without following symlinks and checked
// to be the file reconcile made, so a path swapped since the plan is never written through:
// zero and random by reconcile over every range the file holds data in (a sparse image is not
// filled, and libvirt's own zero wipe of a sparse file only deallocates, leaving the data on
// disk), the other algorithms by scrub on that descriptor; synced before the unlink.
import { randomFillSync } from 'node:crypto';
import { constants } from 'node:fs';
import { open } from 'node:fs/promises';
import type { WipeAlgorithm } from '../../reconcile/model.js';
import { dataExtents } from '../../tools/extents.js';
import { scrubOpenFile } from '../../tools/scrub.js';
import type { FileIdentity } from './files.js';

const CHUNK = 1024 * 1024;

export type WipeOutcome = 'wiped' | 'not-ours' | 'linked';

/**
 * Wipes the file at `p` if it is still the one recorded (every field of `expect` given: a
 * volume's record keeps only its birth time) and has no other name. Otherwise touches nothing
 * and says why: another file (or a symlink) is there now, or a hard link elsewhere still
 * reaches the data (someone's copy by link: unlinking our name leaves it). Aborting `signal`
 * stops between chunks with an error (the file is then not deleted, and is wiped next time).
 */
export async function wipeFile(p: string, expect: Partial<FileIdentity>, algorithm: WipeAlgorithm, signal?: AbortSignal): Promise<WipeOutcome> {
  let fh: Awaited<ReturnType<typeof open>>;
  try {
    fh = await open(p, constants.O_RDWR | constants.O_NOFOLLOW);
  } catch (e) {
    const code = (e as NodeJS.ErrnoException).code;
    if (code === 'ENOENT' || code === 'ELOOP') return 'not-ours';
    throw e;
  }
  try {
    const st = await fh.stat({ bigint: true });
    const same =
      (expect.ino === undefined || Number(st.ino) === expect.ino) &&
      (expect.dev === undefined || Number(st.dev) === expect.dev) &&
      (expect.birth === undefined || String(st.birthtimeNs) === expect.birth);
    if (!st.isFile() || !same) return 'not-ours';
    if (st.nlink > 1n) return 'linked';
    // This very descriptor, by a path that cannot be swapped.
    const fdPath = `/proc/${process.pid}/fd/${fh.fd}`;
    if (algorithm !== 'zero' && algorithm !== 'random') {
      await scrubOpenFile(fdPath, algorithm, signal);
      return 'wiped';
    }
    const ranges = await dataExtents(fdPath, Number(st.size));
    const buf = Buffer.alloc(CHUNK);
    for (const [start, end] of ranges) {
      for (let at = start; at < end; at += CHUNK) {
        if (signal?.aborted) throw new Error(`${p}: wipe interrupted; the file is kept, and wiped again before it is deleted`);
        const n = Math.min(CHUNK, end - at);
        if (algorithm === 'random') randomFillSync(buf, 0, n);
        await fh.write(buf, 0, n, at);
      }
    }
    await fh.datasync();
    return 'wiped';
  } finally {
    await fh.close();
  }
}
