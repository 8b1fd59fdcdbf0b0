// Signatures on block devices (blkid, wipefs from util-linux): which filesystem a device
// holds, and erasing the one reconcile made when a pool's storage goes.
import { CommandError, run } from './exec.js';

export interface FilesystemSignature {
  type: string;
  uuid?: string;
}

/** The filesystem on a device (blkid's low-level probe, no cache), or undefined if none. */
export async function filesystemOn(device: string): Promise<FilesystemSignature | undefined> {
  try {
    const out = (await run('blkid', ['-p', '-o', 'export', device], { retries: 0 })).stdout;
    const field = (k: string) => new RegExp(`^${k}=(.*)$`, 'm').exec(out)?.[1];
    const type = field('TYPE');
    return type ? { type, uuid: field('UUID') } : undefined;
  } catch (e) {
    // blkid exits 2 when it finds no signature at all.
    if (e instanceof CommandError && e.exitCode === 2) return undefined;
    throw e;
  }
}

/** Erases every signature on the device (wipefs -a): the filesystem is gone, its blocks are not overwritten. */
export async function wipeSignatures(device: string): Promise<void> {
  await run('wipefs', ['-a', device], { retries: 0 });
}
