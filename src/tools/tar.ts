// tar: one member of an archive, read without unpacking the rest (an OCI archive's index and manifest).
import { run } from './exec.js';

export async function readMember(archive: string, member: string): Promise<string> {
  return (await run('tar', ['-xOf', archive, '--', member], { retries: 0 })).stdout;
}
