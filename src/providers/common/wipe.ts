// Overwriting an image file before it is deleted (`wipe:` on an image at a path): every
// byte it holds data in, with zeros or random bytes, through a descriptor checked to be the
// file reconcile made, synced to disk before the file is unlinked. Pool volumes are wiped by
// libvirt (vol-wipe) instead.
import { randomFillSync } from 'node:crypto';
import { constants } from 'node:fs';
import { open } from 'node:fs/promises';
import { dataExtents } from '../../tools/extents.js';
import { identityFrom, sameIdentity, type FileIdentity } from './files.js';

const CHUNK = 1024 * 1024;

/**
 * Wipes the file at `p` if it is still the one recorded (`expect`) and has no other name.
 * Otherwise touches nothing and says why: another file (or a symlink) is there now, or a hard
 * link elsewhere still reaches the data (someone's copy by link: unlinking our name leaves it).
 */
export async function wipeFile(p: string, expect: FileIdentity, algorithm: 'zero' | 'random'): Promise<'wiped' | 'not-ours' | 'linked'> {
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
    if (!st.isFile() || !sameIdentity(identityFrom(st), expect)) return 'not-ours';
    if (st.nlink > 1n) return 'linked';
    const size = Number(st.size);
    // The extents of this very descriptor (not of whatever the path names by then).
    const ranges = await dataExtents(`/proc/${process.pid}/fd/${fh.fd}`, size);
    const buf = Buffer.alloc(CHUNK);
    for (const [start, end] of ranges) {
      for (let at = start; at < end; at += CHUNK) {
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
