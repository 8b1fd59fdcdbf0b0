// `reconcile check` on deliberately leaked and corrupted qcow2 images, and --repair that
// never touches the disk of a running domain. Results asserted with qemu-img's own check.
import { chmod } from 'node:fs/promises';
import path from 'node:path';
import { execa } from 'execa';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { startPrivateLibvirtd, type PrivateLibvirtd } from '../src/dev/private-libvirtd.js';
import { damageQcow2 as damage, qemuImg, sandbox, virsh, type Sandbox } from './helpers.js';

let lv: PrivateLibvirtd;
let sb: Sandbox;
const p = (f: string) => path.join(sb.dir, f);

async function qemuCheck(file: string): Promise<{ leaks?: number; corruptions?: number }> {
  const r = await execa('qemu-img', ['check', '-U', '--output=json', file], { reject: false });
  return JSON.parse(String(r.stdout));
}

beforeAll(async () => {
  lv = await startPrivateLibvirtd();
  sb = await sandbox('check', { libvirt: lv });
  await chmod(sb.dir, 0o755);
  for (const n of ['clean', 'leaky', 'broken', 'busy']) {
    await qemuImg('create', '-q', '-f', 'qcow2', p(`${n}.qcow2`), '16M');
    await execa('qemu-io', ['-c', 'write -P 0x5a 0 256K', p(`${n}.qcow2`)]);
  }
  await qemuImg('create', '-q', '-f', 'raw', p('plain.raw'), '1M');
  await damage(p('leaky.qcow2'), 'leak');
  await damage(p('broken.qcow2'), 'corrupt');
  await damage(p('busy.qcow2'), 'leak');
  await sb.yaml(`version: 1
images:
  clean: { path: $DIR/clean.qcow2, size: 16M, adopt: true }
  leaky: { path: $DIR/leaky.qcow2, size: 16M, adopt: true }
  broken: { path: $DIR/broken.qcow2, size: 16M, adopt: true }
  busy: { path: $DIR/busy.qcow2, size: 16M, adopt: true }
  plain: { path: $DIR/plain.raw, format: raw, size: 1M, adopt: true }
vms:
  guest:
    create: { memory: 64M, vcpus: 1 }
    disks: [{ image: busy, cache: none }]
`);
  expect((await sb.run('apply')).code).toBe(0);
  await virsh(lv, 'start', 'guest');
});
afterAll(async () => {
  await lv?.stop();
  await sb?.cleanup();
});

describe('reconcile check', () => {
  it('reports leaks and corruptions, and formats it cannot check', async () => {
    const r = await sb.run('check', '-o', 'json');
    expect(r.code).toBe(1);
    const rows = Object.fromEntries((JSON.parse(r.stdout) as { name: string; result: string; inUse: boolean }[]).map((x) => [x.name, x]));
    expect(rows.clean!.result).toBe('ok');
    expect(rows.leaky!.result).toBe('1 leaked cluster(s) (repair with --repair)');
    expect(rows.broken!.result).toMatch(/^1 corruption\(s\) \(repair with --repair=all\)/);
    expect(rows.plain!.result).toMatch(/not checkable/);
    expect(rows.busy!.inUse).toBe(true);
    expect(rows.busy!.result).toMatch(/1 leaked cluster/);
  });

  it("--repair fixes leaks only; --repair=all fixes corruptions; a running domain's disk is never repaired", async () => {
    const leaks = await sb.run('check', '--repair');
    expect(leaks.stdout).toMatch(/leaky\s+repaired 1 leaked cluster\(s\)/);
    expect(leaks.stdout).toMatch(/broken\s+1 corruption\(s\)/);
    expect(leaks.stdout).toMatch(/busy\s+1 leaked cluster\(s\); not repaired: a running domain uses it \[in use by a running domain\]/);
    expect(leaks.code).toBe(1);
    expect((await qemuCheck(p('leaky.qcow2'))).leaks).toBeUndefined();
    expect((await qemuCheck(p('broken.qcow2'))).corruptions).toBe(1);

    const all = await sb.run('check', '--repair=all');
    expect(all.stdout).toMatch(/broken\s+repaired 1 corruption\(s\)/);
    expect((await qemuCheck(p('broken.qcow2'))).corruptions).toBeUndefined();
    expect((await qemuCheck(p('busy.qcow2'))).leaks).toBe(1);
    // The repaired data is intact.
    const read = await execa('qemu-io', ['-c', 'read -P 0x5a 0 256K', p('broken.qcow2')]);
    expect(read.stdout).not.toMatch(/Pattern verification failed/);

    await virsh(lv, 'destroy', 'guest');
    const after = await sb.run('check', '--repair');
    expect(after.code).toBe(0);
    expect(after.stdout).toMatch(/busy\s+repaired 1 leaked cluster\(s\)/);
  });
});
