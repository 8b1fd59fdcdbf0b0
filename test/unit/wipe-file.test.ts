// wipeFile on real files (no libvirt): what it overwrites, and what it refuses to touch.
import { link, mkdtemp, open, readFile, rm, stat, symlink, writeFile } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import path from 'node:path';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { identityOf } from '../../src/providers/common/files.js';
import { wipeFile } from '../../src/providers/common/wipe.js';

let dir: string;
const p = (f: string) => path.join(dir, f);
beforeAll(async () => {
  dir = await mkdtemp(path.join(tmpdir(), 'vr-wipefile-'));
});
afterAll(() => rm(dir, { recursive: true, force: true }));

/** A sparse 64 MiB file with 1 MiB of 'A' at 10 MiB. */
async function sparse(name: string): Promise<string> {
  const f = p(name);
  const fh = await open(f, 'w');
  await fh.truncate(64 * 1024 * 1024);
  await fh.write(Buffer.alloc(1024 * 1024, 'A'), 0, 1024 * 1024, 10 * 1024 * 1024);
  await fh.close();
  return f;
}

describe('wipeFile', () => {
  it('overwrites the data of a sparse file in place with zeros, without filling its holes', async () => {
    const f = await sparse('a.raw');
    const fh = await open(f, 'r');
    try {
      expect(await wipeFile(f, await identityOf(f), 'zero')).toBe('wiped');
      const st = await fh.stat();
      // Written over, not deallocated (libvirt's zero wipe of a sparse file only truncates it).
      expect(st.blocks * 512).toBeGreaterThanOrEqual(1024 * 1024);
      expect(st.blocks * 512).toBeLessThan(8 * 1024 * 1024);
      const buf = Buffer.alloc(1024 * 1024);
      await fh.read(buf, 0, buf.length, 10 * 1024 * 1024);
      expect(buf.every((b) => b === 0)).toBe(true);
    } finally {
      await fh.close();
    }
  });

  it('random leaves no byte of the data', async () => {
    const f = await sparse('r.raw');
    expect(await wipeFile(f, await identityOf(f), 'random')).toBe('wiped');
    expect((await readFile(f)).includes(Buffer.alloc(4096, 'A'))).toBe(false);
  });

  it('scrub algorithms write through the open descriptor', async () => {
    const f = p('dod.raw');
    await writeFile(f, Buffer.alloc(256 * 1024, 'B'));
    expect(await wipeFile(f, { birth: (await identityOf(f)).birth }, 'dod')).toBe('wiped');
    expect((await readFile(f)).includes(Buffer.alloc(4096, 'B'))).toBe(false);
  });

  it('touches nothing through a symlink, under another identity, or when another hard link reaches the data', async () => {
    const target = p('theirs.raw');
    await writeFile(target, Buffer.alloc(64 * 1024, 'C'));
    const id = await identityOf(target);
    await symlink(target, p('link.raw'));
    expect(await wipeFile(p('link.raw'), id, 'zero')).toBe('not-ours');
    expect(await wipeFile(target, { ...id, birth: '1' }, 'zero')).toBe('not-ours');
    await link(target, p('hard.raw'));
    expect(await wipeFile(target, id, 'zero')).toBe('linked');
    expect((await readFile(target)).every((b) => b === 0x43)).toBe(true);
    expect(await wipeFile(p('missing.raw'), id, 'zero')).toBe('not-ours');
    expect((await stat(target)).size).toBe(64 * 1024);
  });

  it('stops when aborted, leaving the file to be wiped again', async () => {
    const f = await sparse('stop.raw');
    const ac = new AbortController();
    ac.abort();
    await expect(wipeFile(f, await identityOf(f), 'zero', ac.signal)).rejects.toThrow(/wipe interrupted/);
  });
});
