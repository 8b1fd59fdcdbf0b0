// Scratch space: private directories that exist only for one call (virsh definitions, the
// converted copy a volume import uploads). Commands that hold the state directory's lock put
// them under STATE_DIR/scratch, named by pid, so that whatever a killed process leaves
// behind (a full-size import copy) is found and removed by the next one; elsewhere they go
// to the system's temporary directory.
import { mkdir, mkdtemp, readdir, rm, writeFile } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import path from 'node:path';
import { processAlive } from './exec.js';

let root: string | undefined;

/** From now on, scratch directories go under `dir` (the lock holder's STATE_DIR/scratch). */
export function useScratchRoot(dir: string): void {
  root = dir;
}

/**
 * Removes scratch directories under `dir` whose process no longer runs; returns them.
 * Only entries shaped as this module makes them (PID-random) are touched.
 */
export async function removeAbandonedScratch(dir: string): Promise<string[]> {
  const names = await readdir(dir).catch(() => [] as string[]);
  const removed: string[] = [];
  for (const n of names) {
    const m = /^(\d+)-[A-Za-z0-9]{6}$/.exec(n);
    if (!m || Number(m[1]) === process.pid || processAlive(Number(m[1]))) continue;
    await rm(path.join(dir, n), { recursive: true, force: true });
    removed.push(path.join(dir, n));
  }
  return removed;
}

/** Runs fn with a private scratch directory, removed afterwards whatever happens. */
export async function withTempDir<T>(fn: (dir: string) => Promise<T>): Promise<T> {
  let dir: string;
  if (root) {
    await mkdir(root, { recursive: true, mode: 0o700 });
    dir = await mkdtemp(path.join(root, `${process.pid}-`));
  } else {
    dir = await mkdtemp(path.join(tmpdir(), 'virt-reconcile-'));
  }
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
