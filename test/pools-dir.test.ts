// dir pools and their volumes in a private libvirtd: every assertion reads what virsh
// (and qemu-img, for qcow2 details) reports afterwards.
import { existsSync, mkdirSync, readdirSync, readFileSync, statSync, writeFileSync } from 'node:fs';
import { writeFile } from 'node:fs/promises';
import path from 'node:path';
import { execa } from 'execa';
import { afterAll, afterEach, beforeAll, describe, expect, it } from 'vitest';
import { startPrivateLibvirtd, type PrivateLibvirtd } from '../src/dev/private-libvirtd.js';
import { CLI, qemuImg, qemuInfo, sandbox, virsh, waitForSpawn, writers, type Sandbox, recorded } from './helpers.js';

const MiB = 1024 * 1024;
let lv: PrivateLibvirtd;
let sb: Sandbox;
const p = (f: string) => path.join(sb.dir, f);

beforeAll(async () => {
  lv = await startPrivateLibvirtd();
  sb = await sandbox('pools', { libvirt: lv });
  await qemuImg('create', '-q', '-f', 'raw', p('seed.raw'), '3M');
  await execa('qemu-io', ['-f', 'raw', '-c', 'write -P 0x7e 0 2M', p('seed.raw')]);
});
afterAll(async () => {
  await lv?.stop();
  await sb?.cleanup();
});

const POOL = `version: 1
pools:
  vm:
    type: dir
    path: $DIR/pool
    permissions: { owner: 0, group: 0, mode: "0711" }
    capacityAlert: 1%
`;

describe('dir pool', () => {
  it('is defined, built, started and autostarted with the right XML and permissions', async () => {
    await sb.yaml(POOL);
    const r = await sb.run('apply');
    expect(r.stdout).toMatch(/Apply complete: 1 created/);
    const xml = await virsh(lv, 'pool-dumpxml', 'vm');
    expect(xml).toContain("<pool type='dir'>");
    expect(xml).toContain(`<path>${p('pool')}</path>`);
    expect(xml).toMatch(/<mode>0711<\/mode>/);
    const info = await virsh(lv, 'pool-info', 'vm');
    expect(info).toMatch(/State:\s+running/);
    expect(info).toMatch(/Autostart:\s+yes/);
    expect(statSync(p('pool')).mode & 0o777).toBe(0o711);
  });

  it('a second apply plans nothing and spawns one read-only virsh process', async () => {
    await sb.resetTrace();
    const r = await sb.run('apply');
    expect(r.stdout).toMatch(/No changes/);
    const spawned = await sb.spawned();
    expect(spawned.length).toBe(1);
    expect(spawned[0]!.slice(0, 2)).toEqual(['virsh', '-q']);
    expect(spawned[0]![4]).toMatch(/^pool-info vm ; echo/);
  });

  it('heals drift: stopped and not autostarted pool is started and autostarted again', async () => {
    await virsh(lv, 'pool-autostart', 'vm', '--disable');
    await virsh(lv, 'pool-destroy', 'vm');
    const plan = await sb.run('plan', '--detailed-exitcode');
    expect(plan.code).toBe(2);
    expect(plan.stdout).toMatch(/~ pools\.vm\s+update\s+state inactive -> active, autostart false -> true/);
    await sb.run('apply');
    const info = await virsh(lv, 'pool-info', 'vm');
    expect(info).toMatch(/State:\s+running/);
    expect(info).toMatch(/Autostart:\s+yes/);
  });

  it('show lists capacity, allocation, available and flags a pool over its capacityAlert', async () => {
    const r = await sb.run('show', '-o', 'json');
    const pool = JSON.parse(r.stdout).pools[0];
    expect(pool).toMatchObject({ name: 'vm', type: 'dir', active: true, autostart: true, capacityAlert: 1, status: 'in-sync' });
    expect(pool.capacity).toBeGreaterThan(0);
    expect(pool.available).toBeGreaterThan(0);
    expect(pool.overAlert).toBe(pool.usedPercent >= 1);
    const text = await sb.run('show');
    expect(text.stdout).toMatch(/^vm\s+dir\s+active\s+yes\s+\d/m);
    if (pool.overAlert) expect(text.stdout).toMatch(/warning: pool vm is .*% allocated, over its capacityAlert of 1%/);
  });
});

describe('volumes in a dir pool', () => {
  const IMAGES = `
images:
  base: { pool: vm, size: 64M, qcow2: { clusterSize: 128K, lazyRefcounts: true, preallocation: metadata }, permissions: { mode: "0640" } }
  plain: { pool: vm, size: 64M }
  rawfull: { pool: vm, format: raw, size: 8M, qcow2: {} }
  vhd: { pool: vm, format: vhd, size: 16M }
  vmdk: { pool: vm, format: vmdk, size: 16M }
  imported: { pool: vm, size: 8M, source: { file: $DIR/seed.raw } }
  copy: { pool: vm, format: raw, source: { image: imported } }
  overlay: { pool: vm, source: { backing: base } }
  named: { pool: vm, volume: custom-name.qcow2, size: 4M }
  falloc: { pool: vm, size: 16M, qcow2: { preallocation: falloc } }
  fromvol: { path: $DIR/from-volume.qcow2, source: { image: imported } }
`;

  it('creates every format with its options, and every source', async () => {
    await sb.yaml(POOL + IMAGES.replace('qcow2: {} }', '}'));
    const r = await sb.run('apply');
    expect(r.code).toBe(0);
    expect(r.stdout).toMatch(/Apply complete: 11 created/);
    const vol = async (name: string) => virsh(lv, 'vol-dumpxml', '--pool', 'vm', name);
    expect(await vol('base.qcow2')).toMatch(/<capacity unit='bytes'>67108864<\/capacity>[\s\S]*<format type='qcow2'\/>[\s\S]*<mode>0640<\/mode>/);
    const base = await qemuInfo(p('pool/base.qcow2'));
    expect(base['cluster-size']).toBe(128 * 1024);
    expect(base['format-specific'].data).toMatchObject({ compat: '1.1', 'lazy-refcounts': true });
    // metadata preallocation (not full): much more than a plain qcow2, much less than its capacity
    expect(statSync(p('pool/base.qcow2')).size).toBeGreaterThan(statSync(p('pool/plain.qcow2')).size);
    expect(base['actual-size']).toBeLessThan(32 * MiB);
    expect(await vol('rawfull.img')).toMatch(/<format type='raw'\/>/);
    // falloc: every cluster allocated (the newcomer pass found libvirt allocating none).
    expect((await qemuInfo(p('pool/falloc.qcow2')))['actual-size']).toBeGreaterThanOrEqual(16 * MiB);
    expect(await vol('vhd.vhd')).toMatch(/<format type='vpc'\/>/);
    expect(await vol('vmdk.vmdk')).toMatch(/<format type='vmdk'\/>/);
    expect(await vol('custom-name.qcow2')).toMatch(/<capacity unit='bytes'>4194304</);
    await expect(qemuImg('compare', '-F', 'raw', p('pool/imported.qcow2'), p('seed.raw'))).resolves.toMatch(/identical/);
    expect((await qemuInfo(p('pool/imported.qcow2')))['virtual-size']).toBe(8 * MiB);
    await expect(qemuImg('compare', p('pool/copy.img'), p('pool/imported.qcow2'))).resolves.toMatch(/identical/);
    expect(await vol('overlay.qcow2')).toContain(`<path>${p('pool/base.qcow2')}</path>`);
    await expect(qemuImg('compare', p('from-volume.qcow2'), p('pool/imported.qcow2'))).resolves.toMatch(/identical/);
  });

  it('is idempotent: no writer, one virsh process, no qemu-img', async () => {
    await sb.resetTrace();
    const r = await sb.run('apply');
    expect(r.stdout).toMatch(/No changes\. The host matches the desired state \(12 object\(s\) in sync\)/);
    const spawned = await sb.spawned();
    expect(writers(spawned)).toEqual([]);
    expect(spawned.map((a) => a[0])).toEqual(['virsh']);
  });

  it('grows with vol-resize in place, refuses to shrink, guards a format change', async () => {
    const key = await virsh(lv, 'vol-key', '--pool', 'vm', 'plain.qcow2');
    await sb.yaml(POOL + IMAGES.replace('plain: { pool: vm, size: 64M }', 'plain: { pool: vm, size: 96M }').replace('qcow2: {} }', '}'));
    const grow = await sb.run('apply');
    expect(grow.stdout).toMatch(/images\.plain: updating \(size 64 MiB -> 96 MiB\)/);
    expect(await virsh(lv, 'vol-dumpxml', '--pool', 'vm', 'plain.qcow2')).toMatch(/<capacity unit='bytes'>100663296</);
    expect(await virsh(lv, 'vol-key', '--pool', 'vm', 'plain.qcow2')).toBe(key);

    await sb.yaml(POOL + IMAGES.replace('plain: { pool: vm, size: 64M }', 'plain: { pool: vm, size: 32M }').replace('qcow2: {} }', '}'));
    const shrink = await sb.run('apply');
    expect(shrink.code).toBe(1);
    expect(shrink.stderr).toMatch(/size 32 MiB is smaller than volume plain\.qcow2 in pool vm \(96 MiB\); shrinking destroys data and is refused/);

    await sb.yaml(
      POOL +
        IMAGES.replace('vhd: { pool: vm, format: vhd, size: 16M }', 'vhd: { pool: vm, format: vmdk, volume: vhd.vhd, size: 16M }')
          .replace('plain: { pool: vm, size: 64M }', 'plain: { pool: vm, size: 96M }')
          .replace('qcow2: {} }', '}'),
    );
    const refused = await sb.run('apply');
    expect(refused.code).toBe(1);
    expect(refused.stderr).toMatch(/volume vhd\.vhd in pool vm must be rebuilt \(format vhd -> vmdk\).*--allow-replace/);
    expect(await virsh(lv, 'vol-dumpxml', '--pool', 'vm', 'vhd.vhd')).toMatch(/<format type='vpc'\/>/);
    expect((await sb.run('apply', '--allow-replace')).stdout).toMatch(/1 replaced/);
    expect(await virsh(lv, 'vol-dumpxml', '--pool', 'vm', 'vhd.vhd')).toMatch(/<format type='vmdk'\/>/);
  });

  it('prunes only its own volumes; the pool is undefined, its directory and what else it holds kept', async () => {
    await execa('qemu-img', ['create', '-q', '-f', 'qcow2', p('pool/someone-elses.qcow2'), '1M']);
    await virsh(lv, 'pool-refresh', 'vm');
    await sb.yaml(
      POOL +
        IMAGES.replace(/ {2}named:.*\n/, '')
          .replace(/ {2}fromvol:.*\n/, '')
          .replace('qcow2: {} }', '}')
          .replace('plain: { pool: vm, size: 64M }', 'plain: { pool: vm, size: 96M }')
          .replace('vhd: { pool: vm, format: vhd, size: 16M }', 'vhd: { pool: vm, format: vmdk, volume: vhd.vhd, size: 16M }'),
    );
    const r = await sb.run('apply', '--prune');
    expect(r.stdout).toMatch(/2 deleted/);
    await expect(virsh(lv, 'vol-info', '--pool', 'vm', 'custom-name.qcow2')).rejects.toThrow(/not found/);
    expect(statSync(p('from-volume.qcow2'), { throwIfNoEntry: false })).toBeUndefined();

    // The pool goes (a definition, not data); the file reconcile did not make stays, and so does
    // the directory (deleteStorage was not declared).
    await sb.yaml('version: 1\n');
    const all = await sb.run('apply', '--prune');
    expect(all.code, all.stderr).toBe(0);
    expect(all.stdout).toMatch(/inventory:pool:vm: deleting \(pool vm left the YAML \(dir at [^)]*\): undefined; its storage is kept \(deleteStorage was not declared\)\)/);
    expect(all.stdout, all.stdout).toMatch(/Apply complete: 0 created, 0 updated, 0 replaced, 10 deleted/);
    expect(await virsh(lv, 'pool-list', '--all', '--name')).not.toMatch(/\bvm\b/);
    expect(readdirSync(p('pool'))).toEqual(['someone-elses.qcow2']);
    await execa('rm', [p('pool/someone-elses.qcow2')]);
  });
});

describe('dir pool replace', () => {
  it('a changed target path needs --allow-replace', async () => {
    await sb.yaml('version: 1\npools:\n  r: { type: dir, path: $DIR/r1 }\n');
    await sb.run('apply');
    await sb.yaml('version: 1\npools:\n  r: { type: dir, path: $DIR/r2 }\n');
    const refused = await sb.run('apply');
    expect(refused.code).toBe(1);
    expect(refused.stderr).toMatch(/pool r must be redefined \(path .*r1 -> .*r2\); libvirt cannot change this in place\. Re-run with --allow-replace/);
    const ok = await sb.run('apply', '--allow-replace');
    expect(ok.stdout).toMatch(/1 replaced/);
    expect(await virsh(lv, 'pool-dumpxml', 'r')).toContain(`<path>${p('r2')}</path>`);
    expect(await virsh(lv, 'pool-info', 'r')).toMatch(/State:\s+running/);
  });

  it('does not prune a volume whose file was replaced by someone else at the same path', async () => {
    await sb.yaml('version: 1\npools:\n  r: { type: dir, path: $DIR/r2 }\nimages:\n  mine: { pool: r, size: 4M }\n');
    await sb.run('apply');
    await virsh(lv, 'vol-delete', '--pool', 'r', 'mine.qcow2');
    await new Promise((res) => setTimeout(res, 20));
    await qemuImg('create', '-q', '-f', 'raw', p('r2/mine.qcow2'), '1M');
    await virsh(lv, 'pool-refresh', 'r');
    await sb.yaml('version: 1\npools:\n  r: { type: dir, path: $DIR/r2 }\n');
    const r = await sb.run('apply', '--prune');
    // Seen at plan time now (the volume's file has another birth time): forgotten, never deleted.
    expect(r.stdout).toMatch(/inventory:volume:r\/mine\.qcow2: deleting \(replaced by a volume reconcile did not create: forgotten, not deleted\)/);
    expect((await qemuInfo(p('r2/mine.qcow2'))).format).toBe('raw');
    expect(JSON.parse(await import('node:fs/promises').then((f) => f.readFile(path.join(sb.stateDir, 'inventory.json'), 'utf8'))).objects['volume:r/mine.qcow2']).toBeUndefined();
  });
});

describe('hostile names', () => {
  it('a dir pool whose path holds spaces sees its volumes (a second apply changes nothing)', async () => {
    await sb.yaml(
      'version: 1\npools:\n  sp: { type: dir, path: "$DIR/my pool dir" }\nimages:\n  a: { pool: sp, size: 1M }\n  b: { pool: sp, volume: b.img, format: raw, size: 1M }\n',
    );
    const r = await sb.run('apply');
    expect(r.code, r.stdout + r.stderr).toBe(0);
    const again = await sb.run('plan', '--detailed-exitcode');
    expect(again.code, again.stdout).toBe(0);
    expect(statSync(p('my pool dir/b.img')).size).toBe(MiB);
  });
});

describe('volumes that are not ours', () => {
  it("changing a pool's permissions redefines it in place (same uuid)", async () => {
    await sb.yaml('version: 1\npools:\n  pp: { type: dir, path: $DIR/pp }\n');
    expect((await sb.run('apply')).code).toBe(0);
    const uuid = (await virsh(lv, 'pool-uuid', 'pp')).trim();
    await sb.yaml('version: 1\npools:\n  pp: { type: dir, path: $DIR/pp, permissions: { mode: "0750" } }\n');
    const r = await sb.run('apply');
    expect(r.code, r.stdout + r.stderr).toBe(0);
    expect((await virsh(lv, 'pool-uuid', 'pp')).trim()).toBe(uuid);
    expect(statSync(p('pp')).mode & 0o777).toBe(0o750);
  });

  it('after a kill during an import, a volume someone else made under that name is not replaced', async () => {
    await qemuImg('create', '-q', '-f', 'raw', p('imp.raw'), '8M');
    await sb.yaml('version: 1\npools:\n  pp: { type: dir, path: $DIR/pp }\nimages:\n  iv: { pool: pp, format: raw, source: { file: $DIR/imp.raw } }\n');
    const argv = [...lv.nsenter, 'node', CLI, 'apply', '-f', p('storage.yaml'), '--state-dir', sb.stateDir, '--connect', lv.uri];
    const crashed = await execa(argv[0]!, argv.slice(1), { reject: false, env: { VIRT_RECONCILE_FAILPOINT: 'volume-created' } });
    expect(crashed.signal ?? crashed.exitCode).not.toBe(0);
    // Someone replaces the half-made volume's file with their own.
    const volFile = p('pp/iv.img');
    await execa('rm', ['-f', volFile]);
    await new Promise((res) => setTimeout(res, 20));
    await writeFile(volFile, Buffer.alloc(8 * MiB, 0x61));
    await virsh(lv, 'pool-refresh', 'pp');
    const r = await sb.run('apply');
    expect(r.code).toBe(1);
    // Its file has another birth time than the one the interrupted build recorded: not ours.
    expect(r.stdout + r.stderr).toMatch(/volume iv\.img in pool pp exists and reconcile did not create it, so it is left alone/);
    expect(readFileSync(volFile).subarray(0, 4).toString()).toBe('aaaa');
    const next = await sb.run('plan');
    expect(next.stdout).toMatch(/volume iv\.img in pool pp exists and reconcile did not create it/);
    await execa('rm', ['-f', volFile]);
    await virsh(lv, 'pool-refresh', 'pp');
  });
});

describe('a volume name taken during the apply', () => {
  it('is not taken for the volume reconcile was about to create', async () => {
    await execa('sh', ['-c', `head -c 256M /dev/urandom > '${p('slow.raw')}'`]);
    await qemuImg('create', '-q', '-f', 'raw', p('imp2.raw'), '8M');
    await sb.yaml(`version: 1
pools:
  pp: { type: dir, path: $DIR/pp }
images:
  a-slow: { path: $DIR/slow.qcow2, source: { file: $DIR/slow.raw }, qcow2: { compressed: true } }
  took: { pool: pp, format: raw, source: { file: $DIR/imp2.raw } }
`);
    await sb.resetTrace();
    const argv = [...lv.nsenter, 'node', CLI, 'apply', '--parallelism', '1', '-f', p('storage.yaml'), '--state-dir', sb.stateDir, '--connect', lv.uri];
    const run = execa(argv[0]!, argv.slice(1), { reject: false, env: { VIRT_RECONCILE_TRACE: sb.trace } });
    await waitForSpawn(sb, 'convert');
    await writeFile(p('pp/took.img'), Buffer.alloc(8 * MiB, 0x62));
    await virsh(lv, 'pool-refresh', 'pp');
    const r = await run;
    expect(r.exitCode, String(r.stdout)).toBe(1);
    expect(String(r.stdout)).toMatch(/images\.took: FAILED: .*pp\/took\.img is already taken by a file; the volume is not created over it/);
    expect(readFileSync(p('pp/took.img')).subarray(0, 4).toString()).toBe('bbbb');
    expect(statSync(p('pp/took.img')).size).toBe(8 * MiB);
  });
});

describe('a dir pool that cannot be built', () => {
  let own: Sandbox;
  afterAll(async () => own?.cleanup());
  const q = (f: string) => path.join(own.dir, f);
  it("fails with libvirt's reason, stays defined as reconcile's, and is retried by the next apply", async () => {
    own = await sandbox('pool-nobuild', { libvirt: lv });
    await writeFile(q('notadir'), 'x');
    await own.yaml('version: 1\npools:\n  pnb: { type: dir, path: $DIR/notadir/pool }\n');
    const r = await own.run('apply');
    expect(r.code).toBe(1);
    expect(r.stdout).toMatch(/pools\.pnb: FAILED: could not build dir pool pnb: cannot create path '.*notadir': Not a directory/);
    const again = await own.run('apply');
    expect(again.stdout).toMatch(/pools\.pnb: updating \(state inactive -> active\)/);
    await execa('rm', ['-f', q('notadir')]);
    expect((await own.run('apply')).code).toBe(0);
    await own.yaml('version: 1\n');
    expect((await own.run('apply', '--prune')).code).toBe(0);
    expect(await virsh(lv, 'pool-list', '--all', '--name')).not.toMatch(/\bpnb\b/);
  });
});

describe('blank volumes of one pool are created together', () => {
  let own: Sandbox;
  afterEach(async () => own?.cleanup());
  const q = (f: string) => path.join(own.dir, f);
  it('40 volumes: four virsh processes create them (as many as --parallelism 4 runs at once, 32 at most each), each recorded ready with its key and birth', async () => {
    own = await sandbox('vol-group', { libvirt: lv });
    const decl = Array.from({ length: 40 }, (_, i) => `  b${i}: { pool: pb, size: ${1 + (i % 3)}M${i % 2 ? ', format: raw' : ''} }`).join('\n');
    await own.yaml(`version: 1\npools:\n  pb: { type: dir, path: $DIR/pb }\nimages:\n${decl}\n`);
    await own.resetTrace();
    const r = await own.run('apply');
    expect(r.code, r.stdout + r.stderr).toBe(0);
    expect(r.stdout).toMatch(/41 created/);
    // Each group is one virsh process, its creates written to its input one at a time.
    const creates = (await own.spawned()).filter((a) => a[0] === 'virsh' && /steps on its input: vol-create/.test(a.at(-1)!));
    expect(creates.map((a) => Number(/\((\d+) steps/.exec(a.at(-1)!)![1]))).toEqual([10, 10, 10, 10]);
    const inv = await recorded(own.stateDir);
    for (let i = 0; i < 40; i++) {
      const name = `b${i}.${i % 2 ? 'img' : 'qcow2'}`;
      expect(inv[`volume:pb/${name}`]).toMatchObject({ status: 'ready', key: q(`pb/${name}`), birth: String(statSync(q(`pb/${name}`), { bigint: true }).birthtimeNs) });
    }
    expect((await own.run('plan')).stdout).toMatch(/No changes/);
    await own.yaml('version: 1\n');
    expect((await own.run('apply', '--prune')).code).toBe(0);
    expect(await virsh(lv, 'pool-list', '--all', '--name')).not.toMatch(/\bpb\b/);
  });

  it('one name taken while the group waited: that volume fails alone, the others are made, the foreign file is untouched', async () => {
    own = await sandbox('vol-group-taken', { libvirt: lv });
    await execa('sh', ['-c', `head -c 256M /dev/urandom > '${q('slow2.raw')}'`]);
    await own.yaml(`version: 1
pools:
  pt: { type: dir, path: $DIR/pt }
images:
  a-slow2: { path: $DIR/slow2.qcow2, source: { file: $DIR/slow2.raw }, qcow2: { compressed: true } }
  t1: { pool: pt, format: raw, size: 1M }
  t2: { pool: pt, format: raw, size: 1M }
  t3: { pool: pt, format: raw, size: 1M }
`);
    await own.resetTrace();
    const argv = [...lv.nsenter, 'node', CLI, 'apply', '--parallelism', '1', '-f', q('storage.yaml'), '--state-dir', own.stateDir, '--connect', lv.uri];
    const run = execa(argv[0]!, argv.slice(1), { reject: false, env: { VIRT_RECONCILE_TRACE: own.trace } });
    await waitForSpawn(own, 'convert');
    await writeFile(q('pt/t2.img'), Buffer.alloc(2 * MiB, 0x63));
    await virsh(lv, 'pool-refresh', 'pt');
    const r = await run;
    expect(r.exitCode, String(r.stdout)).toBe(1);
    expect(String(r.stdout)).toMatch(/images\.t2: FAILED: .*t2\.img/);
    expect(String(r.stdout)).toMatch(/images\.t1: created/);
    expect(String(r.stdout)).toMatch(/images\.t3: created/);
    expect(readFileSync(q('pt/t2.img')).subarray(0, 4).toString()).toBe('cccc');
    expect(statSync(q('pt/t2.img')).size).toBe(2 * MiB);
    const inv = await recorded(own.stateDir);
    expect(inv['volume:pt/t2.img']).toBeUndefined();
    expect(inv['volume:pt/t1.img']).toMatchObject({ status: 'ready' });
    await execa('rm', ['-f', q('pt/t2.img'), q('slow2.raw'), q('slow2.qcow2')]);
    await virsh(lv, 'pool-refresh', 'pt');
    await own.yaml('version: 1\n');
    expect((await own.run('apply', '--prune')).code).toBe(0);
  });
});

describe('volume identity (second adversarial pass)', () => {
  it("a user file put at an owned volume's path is foreign: never grown, chmod'ed or replaced", async () => {
    await sb.yaml('version: 1\npools:\n  pq: { type: dir, path: $DIR/pq }\nimages:\n  data: { pool: pq, format: raw, size: 4M }\n');
    expect((await sb.run('apply')).code).toBe(0);
    const f = p('pq/data.img');
    await execa('rm', ['-f', f]);
    await new Promise((res) => setTimeout(res, 20));
    await writeFile(f, Buffer.alloc(4 * MiB, 0x75));
    await virsh(lv, 'pool-refresh', 'pq');
    await sb.yaml('version: 1\npools:\n  pq: { type: dir, path: $DIR/pq }\nimages:\n  data: { pool: pq, format: raw, size: 8M }\n');
    const r = await sb.run('apply', '--allow-replace');
    expect(r.code).toBe(1);
    expect(r.stderr).toMatch(/volume data\.img in pool pq exists and reconcile did not create it/);
    expect(statSync(f).size).toBe(4 * MiB);
    expect(readFileSync(f).subarray(0, 2).toString()).toBe('uu');
  });

  it('a symlink volume is refused (vol-resize would grow its target outside the pool)', async () => {
    const victim = p('victim.raw');
    await writeFile(victim, Buffer.alloc(1 * MiB, 0x76));
    await execa('ln', ['-s', victim, p('pq/link.img')]);
    await virsh(lv, 'pool-refresh', 'pq');
    await sb.yaml('version: 1\npools:\n  pq: { type: dir, path: $DIR/pq }\nimages:\n  link: { pool: pq, volume: link.img, format: raw, adopt: true, size: 2M }\n');
    const r = await sb.run('apply');
    expect(r.code).toBe(1);
    expect(r.stderr).toMatch(/volume link\.img in pool pq is a symlink to .*victim\.raw; reconcile does not follow links/);
    expect(statSync(victim).size).toBe(1 * MiB);
    await execa('rm', ['-f', p('pq/link.img'), p('pq/data.img')]);
    await virsh(lv, 'pool-refresh', 'pq');
  });

  it("a dangling symlink at a new volume's name is never created through (libvirt would make the file outside the pool)", async () => {
    await sb.yaml('version: 1\npools:\n  pq: { type: dir, path: $DIR/pq }\n');
    expect((await sb.run('apply')).code).toBe(0);
    await execa('ln', ['-s', p('outside-one.qcow2'), p('pq/dangling.qcow2')]);
    await execa('ln', ['-s', p('outside-two.qcow2'), p('pq/grouped.qcow2')]);
    await virsh(lv, 'pool-refresh', 'pq');
    // One alone (an overlay is never grouped), two with a third among blank volumes (grouped).
    await sb.yaml(
      'version: 1\npools:\n  pq: { type: dir, path: $DIR/pq }\nimages:\n  base: { pool: pq, size: 4M }\n  dangling: { pool: pq, source: { backing: base } }\n  grouped: { pool: pq, size: 4M }\n  fine: { pool: pq, size: 4M }\n',
    );
    const r = await sb.run('apply');
    expect(r.code).toBe(1);
    expect(r.stdout).toMatch(
      /images\.dangling: FAILED: .*pq\/dangling\.qcow2 is already taken by a symlink to .*outside-one\.qcow2; the volume is not created over it \(nor through a symlink\)/,
    );
    expect(r.stdout).toMatch(/images\.grouped: FAILED: .*pq\/grouped\.qcow2 is already taken by a symlink to .*outside-two\.qcow2/);
    expect(r.stdout).toMatch(/images\.fine: created/);
    expect(statSync(p('outside-one.qcow2'), { throwIfNoEntry: false })).toBeUndefined();
    expect(statSync(p('outside-two.qcow2'), { throwIfNoEntry: false })).toBeUndefined();
    expect(Object.keys(await recorded(sb.stateDir)).filter((k) => /dangling|grouped/.test(k))).toEqual([]);
    await execa('rm', ['-f', p('pq/dangling.qcow2'), p('pq/grouped.qcow2')]);
    await sb.yaml('version: 1\npools:\n  pq: { type: dir, path: $DIR/pq }\n');
    expect((await sb.run('apply', '--prune')).code).toBe(0);
  });

  it('a base used by an overlay of the other kind (volume on file, file on volume) is never pruned', async () => {
    const pool = 'version: 1\npools:\n  po: { type: dir, path: $DIR/po }\n';
    await sb.yaml(`${pool}images:\n  fbase: { path: $DIR/fbase.qcow2, size: 4M }\n  vbase: { pool: po, size: 4M }\n`);
    expect((await sb.run('apply')).code).toBe(0);
    await sb.yaml(
      `${pool}images:\n  fbase: { path: $DIR/fbase.qcow2, size: 4M }\n  vbase: { pool: po, size: 4M }\n  vov: { pool: po, source: { backing: $DIR/fbase.qcow2 } }\n  fov: { path: $DIR/fov.qcow2, source: { backing: $DIR/po/vbase.qcow2 } }\n`,
    );
    expect((await sb.run('apply')).code).toBe(0);
    await sb.yaml(`${pool}images:\n  vov: { pool: po, source: { backing: $DIR/fbase.qcow2 } }\n  fov: { path: $DIR/fov.qcow2, source: { backing: $DIR/po/vbase.qcow2 } }\n`);
    const r = await sb.run('apply', '--prune');
    expect(r.code).toBe(1);
    expect(r.stderr).toMatch(/fbase\.qcow2 \(was images\.fbase\) left the YAML, but images\.vov still use it as backing file/);
    expect(r.stderr).toMatch(/volume vbase\.qcow2 in pool po \(was images\.vbase\) left the YAML, but images\.fov still use it as backing file/);
    expect(statSync(p('fbase.qcow2')).size).toBeGreaterThan(0);
    expect(statSync(p('po/vbase.qcow2')).size).toBeGreaterThan(0);
  });
});

describe('a pool reconcile did not define', () => {
  it('is left alone unless adopted; adopted, it keeps what its declaration does not set, and is never undefined', async () => {
    const own = await sandbox('pool-theirs', { libvirt: lv });
    try {
      await execa('mkdir', ['-m', '0755', path.join(own.dir, 'theirs')]);
      await virsh(lv, 'pool-define-as', 'theirs', 'dir', '--target', path.join(own.dir, 'theirs'));
      await virsh(lv, 'pool-start', 'theirs');
      const xml = await virsh(lv, 'pool-dumpxml', 'theirs');
      await own.yaml('version: 1\npools:\n  theirs: { type: dir, path: $DIR/theirs, permissions: { mode: "0700" } }\nimages:\n  v: { pool: theirs, size: 4M }\n');
      const refused = await own.run('apply');
      expect(refused.code).toBe(1);
      expect(refused.stderr).toMatch(/pool theirs exists and reconcile did not define it, so it is left alone\. To manage it, add adopt: true to pools\.theirs/);
      expect(refused.stderr).toMatch(/images\.v: .*pool theirs exists and reconcile did not define it/);
      expect(await virsh(lv, 'pool-dumpxml', 'theirs')).toBe(xml);
      expect((statSync(path.join(own.dir, 'theirs')).mode & 0o777).toString(8)).toBe('755');
      expect((await virsh(lv, 'vol-list', 'theirs')).trim()).toBe('');

      await own.yaml('version: 1\npools:\n  theirs: { type: dir, path: $DIR/theirs, adopt: true }\nimages:\n  v: { pool: theirs, size: 4M }\n');
      const adopted = await own.run('apply');
      expect(adopted.code, adopted.stderr).toBe(0);
      expect(adopted.stdout).toMatch(/1 created/);
      expect((await virsh(lv, 'pool-info', 'theirs')).replace(/\s+/g, ' ')).toMatch(/Autostart: no/);
      await own.yaml('version: 1\n');
      const destroyed = await own.run('destroy');
      expect(destroyed.code, destroyed.stderr).toBe(0);
      expect(await virsh(lv, 'pool-list', '--all', '--name')).toMatch(/theirs/);
      expect((await virsh(lv, 'vol-list', 'theirs')).trim()).toBe('');
    } finally {
      await virsh(lv, 'pool-destroy', 'theirs').catch(() => undefined);
      await virsh(lv, 'pool-undefine', 'theirs').catch(() => undefined);
      await own.cleanup();
    }
  });
});

describe('an adopted pool', () => {
  it('keeps what its declaration does not set; a replace keeps it adopted; a failed replace puts the old definition back', async () => {
    const own = await sandbox('pool-adopted', { libvirt: lv });
    const d = (f: string) => path.join(own.dir, f);
    try {
      for (const x of ['a', 'b', 'c']) await execa('mkdir', ['-m', '0750', d(x)]);
      await virsh(
        lv,
        'pool-define',
        await own.yaml(
          `<pool type='dir'><name>adp</name><target><path>${d('a')}</path><permissions><mode>0750</mode><owner>107</owner><group>107</group></permissions></target></pool>\n`,
          'adp.xml',
        ),
      );
      await virsh(lv, 'pool-define-as', 'other', 'dir', '--target', d('c'));
      const uuid = (await virsh(lv, 'pool-uuid', 'adp')).trim();

      // A permission change edits libvirt's own definition: owner and group stay.
      await own.yaml('version: 1\npools:\n  adp: { type: dir, path: $DIR/a, adopt: true, active: false, permissions: { mode: "0755" } }\n');
      const chmod = await own.run('apply');
      expect(chmod.code, chmod.stderr).toBe(0);
      const xml = await virsh(lv, 'pool-dumpxml', '--inactive', 'adp');
      expect(xml).toMatch(/<mode>0755<\/mode>\s*<owner>107<\/owner>\s*<group>107<\/group>/);
      expect((await virsh(lv, 'pool-uuid', 'adp')).trim()).toBe(uuid);

      // A replace onto a path another pool holds fails, and the old definition is put back.
      await own.yaml('version: 1\npools:\n  adp: { type: dir, path: $DIR/c, adopt: true, active: false }\n');
      const conflict = await own.run('apply', '--allow-replace');
      expect(conflict.code).toBe(1);
      expect(conflict.stdout).toMatch(/the previous definition of pool adp is back in place/);
      expect(await virsh(lv, 'pool-dumpxml', '--inactive', 'adp')).toContain(d('a'));

      // A replace that works keeps the pool adopted: not recorded, never undefined by destroy.
      await own.yaml('version: 1\npools:\n  adp: { type: dir, path: $DIR/b, adopt: true, active: false }\n');
      const replaced = await own.run('apply', '--allow-replace');
      expect(replaced.code, replaced.stdout + replaced.stderr).toBe(0);
      expect(await virsh(lv, 'pool-dumpxml', '--inactive', 'adp')).toContain(d('b'));
      expect((await virsh(lv, 'pool-info', 'adp')).replace(/\s+/g, ' ')).toMatch(/Autostart: no/);
      await own.yaml('version: 1\n');
      expect((await own.run('destroy')).stdout).toMatch(/No changes\./);
      expect(await virsh(lv, 'pool-list', '--all', '--name')).toMatch(/adp/);
    } finally {
      for (const pool of ['adp', 'other']) await virsh(lv, 'pool-undefine', pool).catch(() => undefined);
      await own.cleanup();
    }
  });
});

describe('removing a pool, and its storage (issue 17)', () => {
  const mode = (f: string) => (statSync(f).mode & 0o777).toString(8);
  const pools = async () => (await virsh(lv, 'pool-list', '--all', '--name')).split('\n').map((l) => l.trim());

  it('a pool undefined by hand is defined again over the directory reconcile made: its volumes are found there, not created over (newcomer pass)', async () => {
    const own = await sandbox('pool-redefined', { libvirt: lv });
    try {
      const yaml =
        'version: 1\npools:\n  again: { type: dir, path: $DIR/again, deleteStorage: true }\nimages:\n  a1: { pool: again, size: 4M }\n  a2: { pool: again, format: raw, size: 4M }\n';
      await own.yaml(yaml);
      expect((await own.run('apply')).code).toBe(0);
      await virsh(lv, 'pool-destroy', 'again');
      await virsh(lv, 'pool-undefine', 'again');
      const r = await own.run('apply');
      expect(r.code, r.stdout + r.stderr).toBe(0);
      expect(r.stdout).toMatch(/pools\.again: created/);
      expect(r.stdout).not.toMatch(/already taken/);
      expect((await own.run('plan')).stdout).toMatch(/No changes/);
      // The directory is still the one reconcile made: its storage goes with the pool.
      expect((await recorded(own.stateDir))['pool:again']).toMatchObject({ storage: 'made' });
      await own.yaml('version: 1\n');
      const pruned = await own.run('apply', '--prune');
      expect(pruned.stdout).toMatch(/pool again left the YAML .*its storage deleted/);
      expect(existsSync(path.join(own.dir, 'again'))).toBe(false);
    } finally {
      await own.cleanup();
    }
  });

  it("a directory of the user's is used as it is: never chmod'ed, built over or deleted; declared permissions on it need adopt", async () => {
    const own = await sandbox('pool-userdir', { libvirt: lv });
    try {
      const dir = path.join(own.dir, 'mine');
      mkdirSync(dir, { mode: 0o750 });
      writeFileSync(path.join(dir, 'notes.txt'), 'mine\n');
      await own.yaml('version: 1\npools:\n  userdir: { type: dir, path: $DIR/mine, permissions: { mode: "0700" } }\n');
      const refused = await own.run('apply');
      expect(refused.code).toBe(1);
      expect(refused.stderr).toMatch(
        /storage\.yaml:3:3: .*\/mine exists and reconcile did not make it; the declared permissions would change its owner and mode\. Add adopt: true to pools\.userdir/,
      );
      expect(await pools()).not.toContain('userdir');

      await own.yaml('version: 1\npools:\n  userdir: { type: dir, path: $DIR/mine }\nimages:\n  v: { pool: userdir, size: 4M }\n');
      const made = await own.run('apply');
      expect(made.code, made.stderr).toBe(0);
      expect(made.stdout).toMatch(
        /pools\.userdir: creating \(new dir pool at [^ ]*\/mine \(a directory that is there already: used as it is, never deleted\), started, autostart\)/,
      );
      expect(mode(dir)).toBe('750');
      expect((await recorded(own.stateDir))['pool:userdir']).toMatchObject({ storage: 'found', path: dir, deleteStorage: false });

      // Declaring deleteStorage later changes the record only; the directory is still not reconcile's.
      await own.yaml('version: 1\npools:\n  userdir: { type: dir, path: $DIR/mine, deleteStorage: true }\nimages:\n  v: { pool: userdir, size: 4M }\n');
      const upd = await own.run('apply');
      expect(upd.stdout).toMatch(/pools\.userdir: updating \(deleteStorage false -> true\)/);
      await own.yaml('version: 1\n');
      const pruned = await own.run('apply', '--prune');
      expect(pruned.code, pruned.stderr).toBe(0);
      expect(pruned.stdout).toMatch(/its storage is kept: it was there before the pool, reconcile did not make it/);
      expect(await pools()).not.toContain('userdir');
      expect(readdirSync(dir)).toEqual(['notes.txt']);
      expect(mode(dir)).toBe('750');
    } finally {
      await own.cleanup();
    }
  });

  it('deleteStorage: the directory reconcile made goes when empty (also when the pool is inactive), stays when it holds a file of the user', async () => {
    const own = await sandbox('pool-delete-storage', { libvirt: lv });
    try {
      await own.yaml(
        'version: 1\npools:\n  gone: { type: dir, path: $DIR/gone, deleteStorage: true }\n  kept: { type: dir, path: $DIR/kept }\n  held: { type: dir, path: $DIR/held, deleteStorage: true }\n  idle: { type: dir, path: $DIR/idle, deleteStorage: true }\nimages:\n  a: { pool: gone, size: 4M }\n  b: { pool: held, size: 4M }\n',
      );
      const made = await own.run('apply');
      expect(made.code, made.stderr).toBe(0);
      expect((await recorded(own.stateDir))['pool:gone']).toMatchObject({ storage: 'made', deleteStorage: true });
      writeFileSync(path.join(own.dir, 'held', 'users-file.img'), 'x');
      await virsh(lv, 'pool-refresh', 'held');
      await virsh(lv, 'pool-destroy', 'idle');
      await own.yaml('version: 1\n');
      const plan = await own.run('plan', '--prune');
      expect(plan.stdout).toMatch(/pool:gone.*undefined; its storage deleted \(deleteStorage: true, made by reconcile, empty\)/);
      expect(plan.stdout).toMatch(/pool:held.*undefined; its storage is kept: it holds 1 thing\(s\) reconcile is not deleting \(users-file\.img\)/);
      expect(plan.stdout).toMatch(/pool:kept.*undefined; its storage is kept \(deleteStorage was not declared\)/);
      expect(plan.stdout).toMatch(/pool:idle.*undefined; its storage deleted/);
      const pruned = await own.run('apply', '--prune');
      expect(pruned.code, pruned.stderr).toBe(0);
      for (const name of ['gone', 'kept', 'held', 'idle']) expect(await pools()).not.toContain(name);
      expect(statSync(path.join(own.dir, 'gone'), { throwIfNoEntry: false })).toBeUndefined();
      expect(statSync(path.join(own.dir, 'idle'), { throwIfNoEntry: false })).toBeUndefined();
      expect(readdirSync(path.join(own.dir, 'kept'))).toEqual([]);
      expect(readdirSync(path.join(own.dir, 'held'))).toEqual(['users-file.img']);
      const again = await own.run('plan', '--prune', '--detailed-exitcode');
      expect(again.code, again.stdout).toBe(0);
    } finally {
      await own.cleanup();
    }
  });

  it('adversarial pass: a volume in a stopped pool is not forgotten (nor its pool undefined); a pool first left inactive is built when started; a directory put in place of the one reconcile made is kept', async () => {
    const own = await sandbox('pool-adversarial', { libvirt: lv });
    try {
      await own.yaml(
        'version: 1\npools:\n  stopped: { type: dir, path: $DIR/stopped, deleteStorage: true }\n  later: { type: dir, path: $DIR/later, active: false, deleteStorage: true }\n  swapped: { type: dir, path: $DIR/swapped, deleteStorage: true }\nimages:\n  v1: { pool: stopped, size: 4M }\n',
      );
      expect((await own.run('apply')).code).toBe(0);
      expect(statSync(path.join(own.dir, 'later'), { throwIfNoEntry: false })).toBeUndefined();
      expect((await recorded(own.stateDir))['pool:later'].storage).toBeUndefined();
      await own.yaml(
        'version: 1\npools:\n  stopped: { type: dir, path: $DIR/stopped, deleteStorage: true }\n  later: { type: dir, path: $DIR/later, deleteStorage: true }\n  swapped: { type: dir, path: $DIR/swapped, deleteStorage: true }\nimages:\n  v1: { pool: stopped, size: 4M }\n',
      );
      const started = await own.run('apply');
      expect(started.code, started.stdout + started.stderr).toBe(0);
      expect((await recorded(own.stateDir))['pool:later']).toMatchObject({ storage: 'made' });

      await virsh(lv, 'pool-destroy', 'stopped');
      await virsh(lv, 'pool-destroy', 'swapped');
      await execa('rmdir', [path.join(own.dir, 'swapped')]);
      mkdirSync(path.join(own.dir, 'swapped'), { mode: 0o700 });
      await own.yaml('version: 1\n');
      const refused = await own.run('apply', '--prune');
      expect(refused.code).toBe(1);
      expect(refused.stderr).toMatch(/volume v1\.qcow2 in pool stopped \(was images\.v1\) left the YAML, but pool stopped is not running, so the volume cannot be seen/);
      expect(refused.stderr).toMatch(/pool stopped left the YAML, but 1 volume\(s\) reconcile made in it are not being pruned \(v1\.qcow2\)/);
      await virsh(lv, 'pool-start', 'stopped');
      const pruned = await own.run('apply', '--prune');
      expect(pruned.code, pruned.stdout + pruned.stderr).toBe(0);
      expect(pruned.stdout).toMatch(/kept [^ ]*\/swapped: it is no longer the directory reconcile made/);
      expect(statSync(path.join(own.dir, 'swapped')).isDirectory()).toBe(true);
      for (const d of ['stopped', 'later']) expect(statSync(path.join(own.dir, d), { throwIfNoEntry: false })).toBeUndefined();
    } finally {
      await own.cleanup();
    }
  });

  it('build: false defines a pool on storage that must exist; build: true with active: false builds and leaves it stopped', async () => {
    const own = await sandbox('pool-build-flag', { libvirt: lv });
    try {
      await own.yaml('version: 1\npools:\n  nobuild: { type: dir, path: $DIR/nb, build: false }\n  stopped: { type: dir, path: $DIR/st, active: false, build: true }\n');
      const first = await own.run('apply');
      expect(first.code).toBe(1);
      expect(first.stdout).toMatch(/pools\.nobuild: FAILED: could not start dir pool nobuild/);
      expect(statSync(path.join(own.dir, 'nb'), { throwIfNoEntry: false })).toBeUndefined();
      expect(statSync(path.join(own.dir, 'st')).isDirectory()).toBe(true);
      expect((await virsh(lv, 'pool-info', 'stopped')).replace(/\s+/g, ' ')).toMatch(/State: inactive/);
      mkdirSync(path.join(own.dir, 'nb'), { mode: 0o755 });
      const second = await own.run('apply');
      expect(second.code, second.stderr).toBe(0);
      expect((await virsh(lv, 'pool-info', 'nobuild')).replace(/\s+/g, ' ')).toMatch(/State: running/);
      expect(mode(path.join(own.dir, 'nb'))).toBe('755');
      await own.yaml('version: 1\n');
      expect((await own.run('apply', '--prune')).code).toBe(0);
    } finally {
      await own.cleanup();
    }
  });
});
