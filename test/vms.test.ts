// VM disks on real domains (KVM where /dev/kvm works, TCG otherwise) in a private libvirtd:
// attach, policy changes, pending restart on a running domain, the host's bus support,
// adoption that leaves other devices alone, detach of only what reconcile attached.
import { existsSync } from 'node:fs';
import { chmod, symlink } from 'node:fs/promises';
import path from 'node:path';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { startPrivateLibvirtd, type PrivateLibvirtd } from '../src/dev/private-libvirtd.js';
import { diskOf, qemuImg, sandbox, virsh, writers, type Sandbox } from './helpers.js';

let lv: PrivateLibvirtd;
let sb: Sandbox;
const extra: Sandbox[] = [];
const p = (f: string) => path.join(sb.dir, f);

beforeAll(async () => {
  lv = await startPrivateLibvirtd();
  sb = await sandbox('vms', { libvirt: lv });
  extra.push(sb); // a test later points sb at another sandbox: this one must still go
  await chmod(sb.dir, 0o755); // qemu runs as libvirt-qemu and must reach the images
  await qemuImg('create', '-q', '-f', 'raw', p('scratch.raw'), '16M');
});
afterAll(async () => {
  // The sandboxes go even if stopping the daemon fails (a domain left running, say).
  try {
    await lv?.stop();
  } finally {
    for (const s of [sb, ...extra]) await s?.cleanup();
  }
});

const BASE = `version: 1
defaults:
  disk: { bus: virtio, cache: none, io: native, discard: unmap }
pools:
  vmpool: { type: dir, path: $DIR/pool }
images:
  root: { path: $DIR/root.qcow2, size: 64M }
  data: { pool: vmpool, format: raw, size: 32M }
`;

/** web after its root disk moved to cache writeback / io threads (used by the running-domain tests). */
const WEB_WRITEBACK = `vms:
  web:
    create: { memory: 128M, vcpus: 1 }
    disks:
      - { image: root, cache: writeback, io: threads }
      - { image: data, bus: scsi, cache: writethrough, io: threads }
      - { path: $DIR/scratch.raw, readonly: true, discard: ignore }
`;

describe('a domain reconcile defines', () => {
  it('is defined with its disks, policies, driver types and our ownership metadata', async () => {
    await sb.yaml(`${BASE}vms:
  web:
    create: { memory: 128M, vcpus: 1 }
    disks:
      - image: root
      - { image: data, bus: scsi, cache: writethrough, io: threads }
      - { path: $DIR/scratch.raw, readonly: true, discard: ignore }
`);
    const r = await sb.run('apply');
    expect(r.stderr).toBe('');
    expect(r.stdout).toMatch(/vms\.web: creating \(new domain \((qemu|kvm), 128 MiB, 1 vCPU\) with 3 disk\(s\): vda .*root\.qcow2, sda vmpool\/data\.img, vdb .*scratch\.raw\)/);
    const xml = await virsh(lv, 'dumpxml', '--inactive', 'web');
    expect(diskOf(xml, 'vda')).toMatch(/<driver name='qemu' type='qcow2' cache='none' io='native' discard='unmap'\/>/);
    expect(diskOf(xml, 'sda')).toMatch(
      /type='volume'[\s\S]*<driver name='qemu' type='raw' cache='writethrough' io='threads' discard='unmap'\/>[\s\S]*<source pool='vmpool' volume='data\.img'\/>[\s\S]*bus='scsi'/,
    );
    expect(diskOf(xml, 'vdb')).toMatch(/<driver name='qemu' type='raw' cache='none' io='native' discard='ignore'\/>[\s\S]*<readonly\/>/);
    expect(xml).not.toMatch(/host-passthrough/);
    expect(xml).toMatch(
      /<vr:storage xmlns:vr="https:\/\/virt-reconcile\.dev\/xmlns\/storage\/1" domain="[0-9a-f-]{36}">\s*<vr:created\/>\s*<vr:disk target="sda"\/>\s*<vr:disk target="vda"\/>\s*<vr:disk target="vdb"\/>/,
    );
  });

  it('a second apply changes nothing and reads libvirt with one process', async () => {
    await sb.resetTrace();
    const r = await sb.run('apply');
    expect(r.stdout).toMatch(/No changes/);
    const spawned = await sb.spawned();
    expect(writers(spawned)).toEqual([]);
    expect(spawned.length).toBe(1);
  });

  it('starts, and a policy change on the running domain goes to its definition and shows pending restart', async () => {
    await virsh(lv, 'start', 'web');
    expect(await virsh(lv, 'domstate', 'web')).toBe('running');
    await sb.yaml(`${BASE}${WEB_WRITEBACK}`);
    const plan = await sb.run('plan');
    expect(plan.stdout).toMatch(/~ vms\.web\s+update\s+vda cache none -> writeback, vda io native -> threads \(running: pending restart/);
    const r = await sb.run('apply');
    expect(r.code).toBe(0);
    expect(r.stdout).toMatch(/the running domain takes it at its next restart/);
    expect(diskOf(await virsh(lv, 'dumpxml', '--inactive', 'web'), 'vda')).toMatch(/cache='writeback' io='threads'/);
    expect(diskOf(await virsh(lv, 'dumpxml', 'web'), 'vda')).toMatch(/cache='none' io='native'/);
    const after = await sb.run('plan', '--detailed-exitcode');
    expect(after.code).toBe(0);
    expect(after.stdout).toMatch(/vms\.web: pending restart: vda cache writeback \(running: none\), vda io threads \(running: native\)/);
    const show = JSON.parse((await sb.run('show', '-o', 'json')).stdout).vms[0];
    expect(show).toMatchObject({ name: 'web', state: 'running', owner: 'created', status: 'pending-restart' });

    await virsh(lv, 'destroy', 'web');
    await virsh(lv, 'start', 'web');
    const restarted = await sb.run('plan', '--detailed-exitcode');
    expect(restarted.code).toBe(0);
    expect(restarted.stdout).not.toMatch(/pending restart/);
    expect(diskOf(await virsh(lv, 'dumpxml', 'web'), 'vda')).toMatch(/cache='writeback' io='threads'/);
  });

  it('hot-plugs a new disk into the running domain and detaches it when it leaves the YAML', async () => {
    await qemuImg('create', '-q', '-f', 'qcow2', p('extra.qcow2'), '8M');
    const yaml = `${BASE}${WEB_WRITEBACK}`;
    await sb.yaml(`${yaml}      - { path: $DIR/extra.qcow2, target: vdc }\n`);
    await sb.run('apply');
    expect(await virsh(lv, 'domblklist', 'web')).toMatch(/vdc\s+.*extra\.qcow2/);
    expect(diskOf(await virsh(lv, 'dumpxml', '--inactive', 'web'), 'vdc')).toMatch(/type='qcow2'/);
    await sb.yaml(yaml);
    const r = await sb.run('apply');
    expect(r.stdout).toMatch(/vdc .*extra\.qcow2 -> detached/);
    expect(await virsh(lv, 'dumpxml', '--inactive', 'web')).not.toMatch(/extra\.qcow2/);
    await virsh(lv, 'destroy', 'web');
  });
});

describe('host support', () => {
  it('refuses a bus the host does not support, naming what it does support', async () => {
    await sb.yaml(`${BASE}vms:\n  fast:\n    create: { memory: 64M, vcpus: 1 }\n    disks:\n      - { image: root, bus: nvme }\n`, 'nvme.yaml');
    const r = await sb.run('plan', '-f', p('nvme.yaml'));
    expect(r.code).toBe(1);
    expect(r.stdout).toMatch(/nvme\.yaml:\d+:\d+: bus nvme is not supported by this host \(libvirt domcapabilities for (qemu|kvm) lists: [a-z, ]*virtio[a-z, ]*\)/);
  });

  it('a domain without create: that does not exist is a refusal, not a definition', async () => {
    await sb.yaml(`${BASE}vms:\n  ghost:\n    disks: [{ image: root }]\n`, 'ghost.yaml');
    const r = await sb.run('plan', '-f', p('ghost.yaml'));
    expect(r.code).toBe(1);
    expect(r.stdout).toMatch(/domain ghost does not exist; add create: \{ memory, vcpus \} to define it/);
  });
});

describe('an adopted domain', () => {
  const OTHER = "<serial type='pty'/><rng model='virtio'><backend model='random'>/dev/urandom</backend></rng>";
  it('gets declared disks and policies; its other devices and undeclared disks are untouched', async () => {
    // Its own state directory: the --prune below must not see the objects of the tests above.
    const own = await sandbox('vms-adopt', { libvirt: lv });
    await chmod(own.dir, 0o755);
    await qemuImg('create', '-q', '-f', 'raw', path.join(own.dir, 'scratch.raw'), '16M');
    extra.push(own);
    sb = own;
    await qemuImg('create', '-q', '-f', 'qcow2', p('legacy.qcow2'), '8M');
    await qemuImg('create', '-q', '-f', 'qcow2', p('theirs.qcow2'), '8M');
    const xml = `<domain type='qemu'><name>legacy</name><memory unit='MiB'>64</memory><vcpu>1</vcpu><os><type arch='x86_64'>hvm</type></os><features><acpi/></features><devices><disk type='file' device='disk'><driver name='qemu' type='qcow2' cache='writeback'/><source file='${p('legacy.qcow2')}'/><target dev='vda' bus='virtio'/></disk><disk type='file' device='disk'><driver name='qemu' type='qcow2'/><source file='${p('theirs.qcow2')}'/><target dev='vdb' bus='virtio'/></disk>${OTHER}</devices></domain>`;
    await import('node:fs/promises').then((fs) => fs.writeFile(p('legacy.xml'), xml));
    await virsh(lv, 'define', p('legacy.xml'));
    const others = (x: string) =>
      x
        .replace(/<disk[\s\S]*?<\/disk>/g, '')
        .replace(/<metadata>[\s\S]*?<\/metadata>/, '')
        .replace(/\s+/g, ' ');
    const before = others(await virsh(lv, 'dumpxml', '--inactive', 'legacy'));

    await sb.yaml(`version: 1\nvms:\n  legacy:\n    disks:\n      - { path: $DIR/legacy.qcow2, cache: none, io: native }\n      - { path: $DIR/scratch.raw }\n`, 'legacy.yaml');
    const r = await sb.run('apply', '-f', p('legacy.yaml'));
    expect(r.code).toBe(0);
    const after = await virsh(lv, 'dumpxml', '--inactive', 'legacy');
    expect(diskOf(after, 'vda')).toMatch(/cache='none' io='native'/);
    expect(diskOf(after, 'vdc')).toMatch(/scratch\.raw/);
    expect(diskOf(after, 'vdb')).toMatch(/theirs\.qcow2/);
    expect(others(after)).toBe(before);
    expect(after).toMatch(/<vr:storage[^>]*>\s*<vr:disk target="vdc"\/>\s*<\/vr:storage>/);

    // Both disks leave the YAML: only the one reconcile attached is detached.
    await sb.yaml('version: 1\nvms:\n  legacy:\n    disks: []\n', 'legacy.yaml');
    await sb.run('apply', '-f', p('legacy.yaml'));
    const last = await virsh(lv, 'dumpxml', '--inactive', 'legacy');
    expect(last).toMatch(/legacy\.qcow2/);
    expect(last).toMatch(/theirs\.qcow2/);
    expect(last).not.toMatch(/scratch\.raw/);
    // An adopted domain is never undefined, even with --prune.
    await sb.yaml('version: 1\n', 'legacy.yaml');
    await sb.run('apply', '-f', p('legacy.yaml'), '--prune');
    expect(await virsh(lv, 'domstate', 'legacy')).toBe('shut off');
  });
});

describe('an image a domain uses as a disk', () => {
  it('is never pruned under a domain that keeps it; detached first when the declared VM lets it go', async () => {
    const own = await sandbox('vms-in-use', { libvirt: lv });
    extra.push(own);
    await chmod(own.dir, 0o755);
    // Someone's own domain, which the YAML then gives a disk.
    await virsh(lv, 'define', await own.yaml("<domain type='qemu'><name>udom</name><memory unit='MiB'>64</memory><os><type>hvm</type></os></domain>\n", 'udom.xml'));
    const img = 'images:\n  data: { path: $DIR/data.qcow2, size: 8M }\n';
    await own.yaml(`version: 1\n${img}vms:\n  udom:\n    disks: [{ image: data }]\n`);
    expect((await own.run('apply')).code).toBe(0);
    expect(await virsh(lv, 'domblklist', 'udom')).toContain(path.join(own.dir, 'data.qcow2'));

    // The VM leaves the YAML with its image: the domain is not reconcile's, so it keeps the disk.
    await own.yaml('version: 1\n');
    const refused = await own.run('apply', '--prune');
    expect(refused.code).toBe(1);
    expect(refused.stderr).toMatch(/data\.qcow2 \(was images\.data\) left the YAML, but domain udom still has it as a disk; it is not deleted under a domain/);
    expect((await qemuImg('info', path.join(own.dir, 'data.qcow2'))).length).toBeGreaterThan(0);
    const destroy = await own.run('destroy');
    expect(destroy.code).toBe(1);
    expect(destroy.stderr).toMatch(/domain udom still has it as a disk/);

    // The declared VM lets the disk go in the same plan: detached first, then deleted.
    await own.yaml('version: 1\nvms:\n  udom:\n    disks: []\n');
    const both = await own.run('apply', '--prune');
    expect(both.code, both.stderr).toBe(0);
    expect(both.stdout.indexOf('vms.udom: updated')).toBeLessThan(both.stdout.indexOf('data.qcow2: deleting'));
    expect(await virsh(lv, 'domblklist', 'udom')).not.toContain('data.qcow2');
    await virsh(lv, 'undefine', 'udom');
  });

  it('is found under any spelling of its path, and through an overlay someone made on it', async () => {
    const own = await sandbox('vms-in-use-2', { libvirt: lv });
    extra.push(own);
    await chmod(own.dir, 0o755);
    await own.yaml('version: 1\nimages:\n  a: { path: $DIR/img/a.qcow2, size: 8M }\n  b: { path: $DIR/img/b.qcow2, size: 8M }\n');
    expect((await own.run('apply')).code).toBe(0);
    await symlink(path.join(own.dir, 'img'), path.join(own.dir, 'link'));
    await qemuImg('create', '-q', '-f', 'qcow2', '-b', path.join(own.dir, 'img', 'b.qcow2'), '-F', 'qcow2', path.join(own.dir, 'theirs.qcow2'));
    const dom = (name: string, file: string) =>
      `<domain type='qemu'><name>${name}</name><memory unit='MiB'>64</memory><os><type>hvm</type></os><devices><disk type='file' device='disk'><driver name='qemu' type='qcow2'/><source file='${file}'/><target dev='vda' bus='virtio'/></disk></devices></domain>\n`;
    await virsh(lv, 'define', await own.yaml(dom('via-link', path.join(own.dir, 'link', 'a.qcow2')), 'l.xml'));
    await virsh(lv, 'define', await own.yaml(dom('via-overlay', path.join(own.dir, 'theirs.qcow2')), 'o.xml'));
    const destroy = await own.run('destroy');
    expect(destroy.code).toBe(1);
    expect(destroy.stderr).toMatch(/a\.qcow2 \(was images\.a\) left the YAML, but domain via-link still has it as a disk/);
    expect(destroy.stderr).toMatch(/b\.qcow2 \(was images\.b\) left the YAML, but domain via-overlay still has it as a disk/);
    for (const f of ['a', 'b']) expect((await qemuImg('info', path.join(own.dir, 'img', `${f}.qcow2`))).length).toBeGreaterThan(0);
    for (const d of ['via-link', 'via-overlay']) await virsh(lv, 'undefine', d);
  });

  it('is not deleted while the running domain still has it, though its definition no longer does (adversarial pass)', async () => {
    const own = await sandbox('vms-live-use', { libvirt: lv });
    extra.push(own);
    await chmod(own.dir, 0o755);
    const yaml = (disks: string) =>
      `version: 1\nimages:\n  boot: { path: $DIR/boot.qcow2, size: 8M }\n  extra: { path: $DIR/extra.qcow2, size: 8M }\nvms:\n  live:\n    create: { memory: 64M, vcpus: 1 }\n    disks: [${disks}]\n`;
    await own.yaml(yaml('{ image: boot }, { image: extra }'));
    expect((await own.run('apply')).code).toBe(0);
    await virsh(lv, 'start', 'live');
    try {
      // extra leaves the VM and the YAML: its definition drops it at once, the guest (no OS to
      // answer the unplug) keeps it open.
      await own.yaml(`${yaml('{ image: boot }').replace('  extra: { path: $DIR/extra.qcow2, size: 8M }\n', '')}`);
      const r = await own.run('apply', '--prune');
      expect(r.code).toBe(1);
      expect(r.stdout).toMatch(/extra\.qcow2: FAILED: .*extra\.qcow2 is still a disk of running domain live/);
      expect(existsSync(path.join(own.dir, 'extra.qcow2'))).toBe(true);
    } finally {
      await virsh(lv, 'destroy', 'live');
    }
    // Stopped, the domain no longer has it: the next prune deletes it.
    expect((await own.run('apply', '--prune')).code).toBe(0);
    expect(existsSync(path.join(own.dir, 'extra.qcow2'))).toBe(false);
    await virsh(lv, 'undefine', 'live');
  });
});
