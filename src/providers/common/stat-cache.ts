// Observations keyed by a regular file's identity and change times. Any write, resize,
// chmod or chown of a file changes its mtime or ctime, so an entry whose signature still
// matches describes the file as it is now. Block devices are never cached: their node's
// times do not move when the device's contents or size do.
import { stat } from 'node:fs/promises';

export interface StatCache {
  get<T>(key: string, signature: string): T | undefined;
  set<T>(key: string, signature: string, value: T): void;
}

/** undefined: no such file; 'other:…': exists but is not a regular file (never cached). */
export async function fileSignature(p: string): Promise<string | undefined> {
  try {
    const s = await stat(p, { bigint: true });
    if (!s.isFile()) return `other:${s.isBlockDevice() ? 'block' : 'notfile'}`;
    return `${s.dev}:${s.ino}:${s.size}:${s.mtimeNs}:${s.ctimeNs}`;
  } catch (e) {
    if ((e as NodeJS.ErrnoException).code === 'ENOENT' || (e as NodeJS.ErrnoException).code === 'ENOTDIR') return undefined;
    throw e;
  }
}

export const cacheable = (sig: string | undefined): sig is string => sig !== undefined && !sig.startsWith('other:');
