import { mkdir, mkdtemp, readdir, rm, utimes, writeFile } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import path from 'node:path';
import { afterEach, describe, expect, it } from 'vitest';
import { pruneCache } from '../../src/sources/cache.js';

const A = 'a'.repeat(64);
const B = 'b'.repeat(64);
const C = 'c'.repeat(64);
let dir: string;
afterEach(() => rm(dir, { recursive: true, force: true }));

describe('download cache pruning', () => {
  it('removes only what no image was built from and nothing touched for a day; a half download is kept while it is fresh', async () => {
    dir = await mkdtemp(path.join(tmpdir(), 'vr-cache-'));
    const d = path.join(dir, 'downloads');
    await mkdir(d);
    const old = new Date(Date.now() - 2 * 24 * 3600 * 1000);
    for (const [n, aged] of [
      [`sha256-${A}`, true], // used by an image: kept however old
      [`sha256-${B}`, true], // unused and old: removed
      [`sha256-${B}.partial`, true],
      [`sha256-${B}.partial.json`, true],
      [`sha256-${C}`, false], // unused but fresh (a build that failed today): kept
      [`sha256-${C}.partial`, false],
      ['notes.txt', true], // not the cache's: never touched
    ] as const) {
      await writeFile(path.join(d, n), 'x');
      if (aged) await utimes(path.join(d, n), old, old);
    }
    const removed = await pruneCache(dir, new Set([A]));
    expect(removed.map((f) => path.basename(f)).sort()).toEqual([`sha256-${B}`, `sha256-${B}.partial`, `sha256-${B}.partial.json`]);
    expect((await readdir(d)).sort()).toEqual(['notes.txt', `sha256-${A}`, `sha256-${C}`, `sha256-${C}.partial`]);
  });
});
