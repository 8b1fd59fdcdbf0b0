// virsh reads definitions from files: a private scratch file that exists only for one call.
import { mkdtemp, rm, writeFile } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import path from 'node:path';

/** Runs fn with a private scratch directory, removed afterwards whatever happens. */
export async function withTempDir<T>(fn: (dir: string) => Promise<T>): Promise<T> {
  const dir = await mkdtemp(path.join(tmpdir(), 'virt-reconcile-'));
  try {
    return await fn(dir);
  } finally {
    await rm(dir, { recursive: true, force: true });
  }
}

/** Runs fn with `content` in a private file (mode 0600). */
export function withTempFile<T>(content: string, fn: (file: string) => Promise<T>): Promise<T> {
  return withTempDir(async (dir) => {
    const file = path.join(dir, 'definition.xml');
    await writeFile(file, content, { mode: 0o600 });
    return fn(file);
  });
}
