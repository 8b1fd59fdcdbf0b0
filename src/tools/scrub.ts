// scrub(1), the pattern writer libvirt's vol-wipe uses for its algorithms other than zero,
// run on a file reconcile holds open: given /proc/PID/fd/N, it writes to that very file, not
// to whatever its path names by then (a symlink swapped in is never followed).
import { run } from './exec.js';

export async function scrubOpenFile(fdPath: string, pattern: string, signal?: AbortSignal): Promise<void> {
  await run('scrub', ['-f', '-p', pattern, fdPath], { retries: 0, signal });
}
