// Seed and secret files are read only if regular and small: a FIFO would block a plan, a
// link to /dev/zero would never end, a huge file would be read whole before being refused.
import { execa } from 'execa';
import { mkdtemp, rm, symlink, truncate, writeFile } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import path from 'node:path';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { readSmallFile, readUnchanged } from '../../src/providers/common/small-files.js';

let dir: string;
const p = (f: string) => path.join(dir, f);
beforeAll(async () => {
  dir = await mkdtemp(path.join(tmpdir(), 'vr-small-'));
});
afterAll(() => rm(dir, { recursive: true, force: true }));

describe('readSmallFile', () => {
  it('refuses at once what is not a regular file, or too large, without reading it', async () => {
    await execa('mkfifo', [p('fifo')]);
    await expect(readSmallFile(p('fifo'))).rejects.toThrow(/is not a regular file/);
    await symlink('/dev/zero', p('zero'));
    await expect(readSmallFile(p('zero'))).rejects.toThrow(/is not a regular file/);
    await writeFile(p('big'), '');
    await truncate(p('big'), 2 * 1024 * 1024 * 1024);
    await expect(readSmallFile(p('big'))).rejects.toThrow(/over 16 MiB/);
  });

  it('reads a regular file, through a symlink too, and tells a write since by its signature', async () => {
    await writeFile(p('ud'), '#cloud-config\n');
    await symlink(p('ud'), p('ud-link'));
    const f = await readSmallFile(p('ud-link'));
    expect(f.content.toString()).toBe('#cloud-config\n');
    await expect(readUnchanged(p('ud'), f.signature)).resolves.toMatchObject({ sha256: f.sha256 });
    await new Promise((r) => setTimeout(r, 10));
    await writeFile(p('ud'), '#cloud-config\nx: 1\n');
    await expect(readUnchanged(p('ud'), f.signature)).rejects.toThrow(/changed since the plan/);
  });
});
