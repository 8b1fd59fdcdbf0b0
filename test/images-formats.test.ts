// Every format and option of the spec, built through the CLI and checked with qemu-img's own report.
import { statSync } from 'node:fs';
import { readFile } from 'node:fs/promises';
import path from 'node:path';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { startPrivateLibvirtd, type PrivateLibvirtd } from '../src/dev/private-libvirtd.js';
import { qemuImg, qemuInfo, sandbox, writers, type Sandbox } from './helpers.js';

const MiB = 1024 * 1024;
let sb: Sandbox;
const p = (f: string) => path.join(sb.dir, f);

let lv: PrivateLibvirtd;

beforeAll(async () => {
  // The LUKS images' libvirt secrets go to a daemon of the test's own, not the host's.
  lv = await startPrivateLibvirtd();
  sb = await sandbox('formats', { libvirt: lv });
  await qemuImg('create', '-q', '-f', 'raw', p('seed.raw'), '3M');
  await qemuImg('create', '-q', '-f', 'qcow2', p('adopted.qcow2'), '8M');
  await import('node:fs/promises').then((fs) => fs.writeFile(p('pass'), 'correct horse battery staple', { mode: 0o600 }));
  // Known data in the seed, to prove imports copy content.
  const { execa } = await import('execa');
  await execa('qemu-io', ['-f', 'raw', '-c', 'write -P 0xab 0 1M', '-c', 'write -P 0x5c 2M 512K', p('seed.raw')]);
  await sb.yaml(`version: 1
images:
  raw:     { path: $DIR/raw.img, format: raw, size: 10M }
  rawfull: { path: $DIR/rawfull.img, format: raw, size: 4M, source: { file: $DIR/seed.raw } }
  q:
    path: $DIR/q.qcow2
    format: qcow2
    size: 64M
    qcow2: { clusterSize: 128K, compression: zstd, lazyRefcounts: true, preallocation: metadata, refcountBits: 64 }
  qplain: { path: $DIR/qplain.qcow2, size: 64M }
  ql2: { path: $DIR/ql2.qcow2, size: 16M, qcow2: { extendedL2: true, clusterSize: 64K } }
  qold: { path: $DIR/qold.qcow2, size: 16M, qcow2: { compat: "0.10" } }
  vhdfixed: { path: $DIR/fixed.vhd, format: vhd, size: 1000001, vhd: { subformat: fixed } }
  vhddyn: { path: $DIR/dyn.vhd, format: vhd, size: 30G, vhd: { subformat: dynamic } }
  vhdxfixed: { path: $DIR/fixed.vhdx, format: vhdx, size: 8M, vhdx: { subformat: fixed } }
  vhdxdyn: { path: $DIR/dyn.vhdx, format: vhdx, size: 127G }
  vmdkstream: { path: $DIR/s.vmdk, format: vmdk, size: 1G, vmdk: { adapterType: lsilogic, subformat: streamOptimized } }
  vmdkflat: { path: $DIR/f.vmdk, format: vmdk, size: 10M, vmdk: { adapterType: ide, subformat: monolithicFlat } }
  vmdksplit: { path: $DIR/split.vmdk, format: vmdk, size: 5G, vmdk: { subformat: twoGbMaxExtentSparse, adapterType: buslogic } }
  imported: { path: $DIR/imported.vhdx, format: vhdx, size: 16M, source: { file: $DIR/seed.raw } }
  copy: { path: $DIR/copy.qcow2, source: { image: imported }, qcow2: { compressed: true } }
  overlay: { path: $DIR/overlay.qcow2, source: { backing: q } }
  overlaypath: { path: $DIR/overlay2.qcow2, size: 32M, source: { backing: $DIR/adopted.qcow2 } }
  lukq: { path: $DIR/luks.qcow2, size: 16M, encryption: { format: luks, passphraseFile: $DIR/pass } }
  lukraw: { path: $DIR/luks.raw, format: raw, size: 16M, encryption: { format: luks, passphraseFile: $DIR/pass } }
  lukcopy: { path: $DIR/lukcopy.qcow2, source: { image: lukq }, decrypt: true }
  perms: { path: $DIR/sub/dir/perms.qcow2, size: 1M, permissions: { owner: 107, group: 108, mode: "0640" } }
`);
  const r = await sb.run('apply');
  if (r.code !== 0) throw new Error(`apply failed:\n${r.stdout}\n${r.stderr}`);
});
afterAll(async () => {
  await lv?.stop();
  await sb?.cleanup();
});

describe('formats and options', () => {
  it('raw: exact size; imports copy the content and grow to the declared size', async () => {
    expect(await qemuInfo(p('raw.img'))).toMatchObject({ format: 'raw', 'virtual-size': 10 * MiB });
    expect(await qemuInfo(p('rawfull.img'))).toMatchObject({ format: 'raw', 'virtual-size': 4 * MiB });
    // Same data where the seed has it; the grown tail reads as zeros.
    await expect(qemuImg('compare', '-f', 'raw', '-F', 'raw', p('seed.raw'), p('rawfull.img'))).resolves.toMatch(/Images are identical/);
  });

  it('qcow2: cluster size, compression type, lazy refcounts, refcount width and preallocation', async () => {
    const i = await qemuInfo(p('q.qcow2'));
    expect(i).toMatchObject({ format: 'qcow2', 'virtual-size': 64 * MiB, 'cluster-size': 128 * 1024 });
    expect(i['format-specific'].data).toMatchObject({ compat: '1.1', 'compression-type': 'zstd', 'lazy-refcounts': true, 'refcount-bits': 64 });
    // metadata preallocation allocates every L2 table: far more metadata than a plain image.
    const plain = await qemuInfo(p('qplain.qcow2'));
    expect(statSync(p('q.qcow2')).size).toBeGreaterThan(statSync(p('qplain.qcow2')).size);
    expect(plain['format-specific'].data['lazy-refcounts']).toBe(false);
    expect((await qemuInfo(p('ql2.qcow2')))['format-specific'].data['extended-l2']).toBe(true);
    expect((await qemuInfo(p('qold.qcow2')))['format-specific'].data.compat).toBe('0.10');
  });

  it('vhd: fixed (exact size, footer only) and dynamic', async () => {
    const fixed = await qemuInfo(p('fixed.vhd'), 'vpc');
    expect(fixed.format).toBe('vpc');
    expect(fixed['virtual-size']).toBeGreaterThanOrEqual(1000001);
    expect(fixed['virtual-size'] - 1000001).toBeLessThan(1024);
    expect(statSync(p('fixed.vhd')).size).toBe(fixed['virtual-size'] + 512);
    const dyn = await qemuInfo(p('dyn.vhd'));
    expect(dyn).toMatchObject({ format: 'vpc', 'virtual-size': 30 * 1024 * MiB });
    const head = (await readFile(p('dyn.vhd'))).subarray(0, 8).toString('latin1');
    expect(head).toBe('conectix');
  });

  it('vhdx: fixed allocates its payload, dynamic does not', async () => {
    expect(await qemuInfo(p('fixed.vhdx'))).toMatchObject({ format: 'vhdx', 'virtual-size': 8 * MiB });
    expect(statSync(p('fixed.vhdx')).size).toBeGreaterThanOrEqual(8 * MiB);
    expect(await qemuInfo(p('dyn.vhdx'))).toMatchObject({ format: 'vhdx', 'virtual-size': 127 * 1024 * MiB });
    expect(statSync(p('dyn.vhdx')).size).toBeLessThan(64 * MiB);
  });

  it('vmdk: subformat and adapter type, including multi-file subformats', async () => {
    const s = await qemuInfo(p('s.vmdk'));
    expect(s['format-specific'].data['create-type']).toBe('streamOptimized');
    expect((await readFile(p('s.vmdk'))).toString('latin1')).toContain('ddb.adapterType = "lsilogic"');
    const f = await qemuInfo(p('f.vmdk'));
    expect(f['format-specific'].data['create-type']).toBe('monolithicFlat');
    expect(statSync(p('f-flat.vmdk')).size).toBe(10 * MiB);
    expect(await readFile(p('f.vmdk'), 'latin1')).toContain('ddb.adapterType = "ide"');
    const split = await qemuInfo(p('split.vmdk'));
    expect(split['format-specific'].data['create-type']).toBe('twoGbMaxExtentSparse');
    expect(split['format-specific'].data.extents.length).toBe(3);
    for (const e of split['format-specific'].data.extents) expect(statSync(path.resolve(sb.dir, e.filename)).isFile()).toBe(true);
  });

  it('sources: file import, image copy (compressed) and backing overlays', async () => {
    expect(await qemuInfo(p('imported.vhdx'))).toMatchObject({ format: 'vhdx', 'virtual-size': 16 * MiB });
    await expect(qemuImg('compare', '-F', 'raw', p('imported.vhdx'), p('seed.raw'))).resolves.toMatch(/identical/);
    expect(await qemuInfo(p('copy.qcow2'))).toMatchObject({ format: 'qcow2', 'virtual-size': 16 * MiB });
    await expect(qemuImg('compare', p('copy.qcow2'), p('imported.vhdx'))).resolves.toMatch(/identical/);
    const o = await qemuInfo(p('overlay.qcow2'));
    expect(o).toMatchObject({ 'backing-filename': p('q.qcow2'), 'backing-filename-format': 'qcow2', 'virtual-size': 64 * MiB });
    const o2 = await qemuInfo(p('overlay2.qcow2'));
    expect(o2).toMatchObject({ 'backing-filename': p('adopted.qcow2'), 'virtual-size': 32 * MiB });
  });

  it('LUKS: encrypted qcow2 and raw, readable only with the passphrase, copyable', async () => {
    const q = await qemuInfo(p('luks.qcow2'));
    expect(q['format-specific'].data.encrypt.format).toBe('luks');
    expect(await qemuInfo(p('luks.raw'))).toMatchObject({ format: 'luks', 'virtual-size': 16 * MiB });
    const c = await qemuInfo(p('lukcopy.qcow2'));
    expect(c).toMatchObject({ format: 'qcow2', 'virtual-size': 16 * MiB });
    expect(c.encrypted ?? false).toBe(false);
  });

  it('never writes the passphrase into state, plans or output', async () => {
    const plan = await sb.run('plan', '-o', 'json');
    const state = await readFile(path.join(sb.stateDir, 'inventory.json'), 'utf8');
    const cache = await readFile(path.join(sb.stateDir, 'observed.json'), 'utf8');
    for (const text of [plan.stdout, plan.stderr, state, cache]) expect(text).not.toContain('battery staple');
  });

  it('creates parent directories and sets owner, group and mode', () => {
    const st = statSync(p('sub/dir/perms.qcow2'));
    expect([st.uid, st.gid, st.mode & 0o777]).toEqual([107, 108, 0o640]);
  });

  it('a second apply changes nothing and spawns no qemu-img writer; a no-op plan spawns only the reads of the secrets', async () => {
    const before = statSync(p('q.qcow2')).mtimeMs;
    await sb.resetTrace();
    const r = await sb.run('apply');
    expect(r.code).toBe(0);
    expect(r.stdout).toMatch(/No changes\. The host matches the desired state \(23 object\(s\) in sync\)/);
    expect(writers(await sb.spawned())).toEqual([]);
    await sb.resetTrace();
    const plan = await sb.run('plan', '--detailed-exitcode');
    expect(plan.code).toBe(0);
    // Only the LUKS images' libvirt secrets are read (their list, then their XML): nothing else.
    expect((await sb.spawned()).map((a) => a[0])).toEqual(['virsh', 'virsh']);
    expect(statSync(p('q.qcow2')).mtimeMs).toBe(before);
  });

  it('leaves no temporary build directories behind', async () => {
    const { readdir } = await import('node:fs/promises');
    expect((await readdir(sb.dir)).filter((n) => n.includes('.reconcile-'))).toEqual([]);
  });
});
