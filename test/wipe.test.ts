// wipe: an image's data is overwritten before reconcile deletes it (prune, destroy, a pool
// volume's replace): image files by reconcile (zero, random; only their data extents), pool
// volumes by libvirt's vol-wipe. What the data was is read back through a descriptor opened
// before the delete, so the test sees the very bytes that were on disk.
import { link, open, readFile } from 'node:fs/promises';
import path from 'node:path';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { startPrivateLibvirtd, type PrivateLibvirtd } from '../src/dev/private-libvirtd.js';
import { qemuImg, sandbox, type Sandbox } from './helpers.js';

let lv: PrivateLibvirtd;
let sb: Sandbox;
const p = (f: string) => path.join(sb.dir, f);

beforeAll(async () => {
  lv = await startPrivateLibvirtd();
  sb = await sandbox('wipe', { libvirt: lv });
});
afterAll(async () => {
  try {
    await lv?.stop();
  } finally {
    await sb?.cleanup();
  }
});

/** Fills `[at, at+len)` of an image with byte `b` (through qemu, whatever its format). */
async function fill(file: string, format: string, b: number, at: string, len: string): Promise<void> {
  const { execa } = await import('execa');
  await execa('qemu-io', ['-f', format, '-c', `write -P 0x${b.toString(16)} ${at} ${len}`, file]);
}

/** Opens files now; `read()` later gives what their data is then, even once they are unlinked. */
async function keepOpen(files: string[]) {
  const handles = await Promise.all(files.map((f) => open(f, 'r')));
  return {
    async read(): Promise<Buffer[]> {
      return Promise.all(
        handles.map(async (h) => {
          const size = Number((await h.stat()).size);
          const buf = Buffer.alloc(size);
          await h.read(buf, 0, size, 0);
          return buf;
        }),
      );
    },
    /** bytes the i-th file still has allocated */
    blocks: async (i: number) => (await handles[i]!.stat()).blocks * 512,
    close: () => Promise.all(handles.map((h) => h.close())),
  };
}

const holds = (buf: Buffer, byte: number) => buf.includes(Buffer.alloc(4096, byte));

const POOL = `pools:
  wp: { type: dir, path: $DIR/pool }
`;

describe('wipe on removal', () => {
  it('overwrites image files (zero, random) and pool volumes (vol-wipe) before prune deletes them; the plan says so', async () => {
    await sb.yaml(`version: 1
${POOL}images:
  f1: { path: $DIR/f1.qcow2, size: 64M, wipe: zero }
  f2: { path: $DIR/f2.raw, format: raw, size: 8M, wipe: random }
  v1: { pool: wp, format: raw, size: 8M, wipe: dod }
  v2: { pool: wp, format: qcow2, size: 8M }
  lz: { pool: wp, format: raw, size: 8M, wipe: zero }
  plain: { path: $DIR/plain.raw, format: raw, size: 4M }
`);
    expect((await sb.run('plan')).stdout).toMatch(/\+ wipe: zero/);
    expect((await sb.run('apply')).code).toBe(0);
    await fill(p('f1.qcow2'), 'qcow2', 0x41, '10M', '1M');
    await fill(p('f2.raw'), 'raw', 0x42, '0', '8M');
    await fill(p('pool/v1.img'), 'raw', 0x43, '0', '8M');
    await fill(p('pool/v2.qcow2'), 'qcow2', 0x44, '0', '1M');
    await fill(p('plain.raw'), 'raw', 0x45, '0', '1M');
    await fill(p('pool/lz.img'), 'raw', 0x48, '1M', '1M');

    // Declared later: only the record changes, nothing on disk.
    await sb.yaml(`version: 1
${POOL}images:
  f1: { path: $DIR/f1.qcow2, size: 64M, wipe: zero }
  f2: { path: $DIR/f2.raw, format: raw, size: 8M, wipe: random }
  v1: { pool: wp, format: raw, size: 8M, wipe: dod }
  v2: { pool: wp, format: qcow2, size: 8M, wipe: zero }
  lz: { pool: wp, format: raw, size: 8M, wipe: zero }
  plain: { path: $DIR/plain.raw, format: raw, size: 4M }
`);
    const upd = await sb.run('plan');
    expect(upd.stdout).toMatch(/images\.v2\s+update\s+wipe none -> zero/);
    expect((await sb.run('apply')).code).toBe(0);
    expect((await sb.run('plan')).stdout).toMatch(/No changes/);

    const files = await keepOpen([p('f1.qcow2'), p('f2.raw'), p('pool/v1.img'), p('pool/v2.qcow2'), p('plain.raw'), p('pool/lz.img')]);
    try {
      await sb.yaml(`version: 1\n${POOL}`);
      const plan = await sb.run('plan', '--prune');
      expect(plan.stdout).toMatch(/f1\.qcow2 +delete +images\.f1 left the YAML .*; overwritten \(zero\) before it is deleted/);
      expect(plan.stdout).toMatch(/wp\/v1\.img +delete +images\.v1 left the YAML .*; wiped \(vol-wipe dod\) before it is deleted/);
      expect(plan.stdout).not.toMatch(/plain\.raw.*overwritten/);
      const r = await sb.run('apply', '--prune');
      expect(r.code).toBe(0);
      const [f1, f2, v1, v2, plain, lz] = await files.read();
      expect(holds(f1!, 0x41)).toBe(false);
      expect(f1!.every((b) => b === 0)).toBe(true);
      expect(holds(f2!, 0x42)).toBe(false);
      expect(f2!.subarray(0, 65536).some((b) => b !== 0)).toBe(true); // random, not zeros
      expect(holds(v1!, 0x43)).toBe(false);
      expect(holds(v2!, 0x44)).toBe(false);
      expect(holds(plain!, 0x45)).toBe(true); // no wipe declared: only unlinked
      // A sparse volume's data is written over where it lies: libvirt's own zero wipe only
      // deallocates it (its blocks, with the data, go back to the filesystem).
      expect(holds(lz!, 0x48)).toBe(false);
      expect(await files.blocks(5)).toBeGreaterThanOrEqual(1024 * 1024);
    } finally {
      await files.close();
    }
  });

  it('never wipes data that another hard link still reaches: only its own name goes', async () => {
    await sb.yaml(`version: 1\nimages:\n  linked: { path: $DIR/linked.raw, format: raw, size: 4M, wipe: zero }\n`);
    expect((await sb.run('apply')).code).toBe(0);
    await fill(p('linked.raw'), 'raw', 0x46, '0', '1M');
    await link(p('linked.raw'), p('users-copy.raw'));
    await sb.yaml('version: 1\n');
    const r = await sb.run('apply', '--prune');
    expect(r.code).toBe(0);
    expect(r.stdout).toMatch(/not wiped: .*linked\.raw has another hard link/);
    expect(holds(await readFile(p('users-copy.raw')), 0x46)).toBe(true);
  });

  it('a pool volume replaced (--allow-replace) has its old data wiped before it is deleted', async () => {
    await sb.yaml(`version: 1\n${POOL}images:\n  rv: { pool: wp, format: raw, size: 8M, wipe: zero }\n`);
    expect((await sb.run('apply')).code).toBe(0);
    await fill(p('pool/rv.img'), 'raw', 0x47, '0', '8M');
    const files = await keepOpen([p('pool/rv.img')]);
    try {
      await sb.yaml(`version: 1\n${POOL}images:\n  rv: { pool: wp, volume: rv.img, format: qcow2, size: 8M, wipe: zero }\n`);
      const r = await sb.run('apply', '--allow-replace');
      expect(r.code).toBe(0);
      const [old] = await files.read();
      expect(holds(old!, 0x47)).toBe(false);
      expect((await qemuImg('info', '--output=json', p('pool/rv.img'))).includes('"format": "qcow2"')).toBe(true);
    } finally {
      await files.close();
    }
  });
});
