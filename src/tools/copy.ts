// Byte copies of image files, sparse (and reflinked where the filesystem can): the copy a
// restore keeps aside until the restored image is verified, and putting it back in place.
import { run } from './exec.js';

/** Copies `src` to `dst`; an existing `dst` is overwritten in place (the same file, its inode kept). */
export async function sparseCopy(src: string, dst: string): Promise<void> {
  await run('cp', ['--reflink=auto', '--sparse=always', '--', src, dst], { retries: 0 });
}
