// A host whose /dev/kvm the QEMU user cannot open (root:root 0600, no udev): simulated in a
// private libvirtd whose namespace covers /dev/kvm with such a node (on a host without
// /dev/kvm at all, the namespace has none, which must behave the same way).
import { existsSync } from 'node:fs';
import { chmod } from 'node:fs/promises';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { startPrivateLibvirtd, type PrivateLibvirtd } from '../src/dev/private-libvirtd.js';
import { sandbox, virsh, type Sandbox } from './helpers.js';

let lv: PrivateLibvirtd;
let sb: Sandbox;

beforeAll(async () => {
  lv = await startPrivateLibvirtd({ kvm: 'root-only' });
  sb = await sandbox('kvm', { libvirt: lv });
  await chmod(sb.dir, 0o755);
});
afterAll(async () => {
  await lv?.stop();
  await sb?.cleanup();
});

describe('a host where QEMU cannot open /dev/kvm', () => {
  it('defines new domains as qemu (TCG) with a plan note saying why and how to fix it, and they start', async () => {
    await sb.yaml(`version: 1
images:
  root: { path: $DIR/root.qcow2, size: 16M }
vms:
  tiny:
    create: { memory: 64M, vcpus: 1 }
    disks: [{ image: root, bus: virtio }]
`);
    const plan = await sb.run('plan');
    expect(plan.code, plan.stderr).toBe(0);
    expect(plan.stdout).toMatch(/vms\.tiny +create +new domain \(qemu, 64 MiB/);
    const why = existsSync('/dev/kvm')
      ? /vms\.tiny: defined as qemu \(TCG, no hardware acceleration\): \/dev\/kvm is root:root 0600, which QEMU's user \S+ cannot open; to use KVM, .*chgrp kvm \/dev\/kvm && chmod 0660 \/dev\/kvm/
      : /vms\.tiny: defined as qemu \(TCG, no hardware acceleration\): \/dev\/kvm does not exist/;
    expect(plan.stdout).toMatch(why);
    await sb.resetTrace();
    const r = await sb.run('apply');
    expect(r.code, r.stderr + r.stdout).toBe(0);
    // One virt type, asked once (the plan above saves nothing; apply keeps the answer).
    expect((await sb.spawned()).filter((a) => a.join(' ').includes('domcapabilities'))).toHaveLength(1);
    expect(await virsh(lv, 'dumpxml', 'tiny')).toMatch(/<domain type='qemu'/);
    await virsh(lv, 'start', 'tiny');
    expect(await virsh(lv, 'domstate', 'tiny')).toMatch(/running/);
    await virsh(lv, 'destroy', 'tiny');
  });

  it('asks libvirt for domcapabilities once, then answers from the cache while the binaries are the same', async () => {
    await sb.resetTrace();
    const r1 = await sb.run('plan');
    expect(r1.code, r1.stderr).toBe(0);
    const asked = (await sb.spawned()).filter((a) => a.join(' ').includes('domcapabilities'));
    expect(asked).toEqual([]);
  });
});
