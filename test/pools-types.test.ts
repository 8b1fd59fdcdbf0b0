// fs pools (ext4, xfs) and a disk pool on loop devices, iscsi-direct against a tgtd on
// 127.0.0.1, and XML round trips plus clear errors for the types this host cannot start.
import { writeFile } from 'node:fs/promises';
import path from 'node:path';
import { execa } from 'execa';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { startPrivateLibvirtd, type PrivateLibvirtd } from '../src/dev/private-libvirtd.js';
import { inNs, sandbox, startTgtd, virsh, type Sandbox, type Tgtd } from './helpers.js';

let lv: PrivateLibvirtd;
let sb: Sandbox;
const loops: string[] = [];
const p = (f: string) => path.join(sb.dir, f);

async function loopDevice(name: string, size: string): Promise<string> {
  await execa('truncate', ['-s', size, p(name)]);
  const dev = String((await execa('losetup', ['--find', '--show', p(name)])).stdout).trim();
  loops.push(dev);
  return dev;
}

beforeAll(async () => {
  lv = await startPrivateLibvirtd();
  sb = await sandbox('pooltypes', { libvirt: lv });
});
afterAll(async () => {
  await lv?.stop(); // unmounts: the namespace goes with its last process
  for (const d of loops) await execa('losetup', ['-d', d], { reject: false });
  await sb?.cleanup();
});

describe('fs pools on loop devices', () => {
  it.each(['ext4', 'xfs'])('%s: built (mkfs), mounted, holds volumes; an existing filesystem is kept', async (fs) => {
    const dev = await loopDevice(`${fs}.img`, '320M');
    const yaml = `version: 1\npools:\n  ${fs}pool: { type: fs, path: $DIR/mnt-${fs}, source: { device: ${dev}, format: ${fs} } }\nimages:\n  ${fs}vol: { pool: ${fs}pool, size: 32M }\n`;
    await sb.yaml(yaml, `${fs}.yaml`);
    const r = await sb.run('apply', '-f', p(`${fs}.yaml`));
    expect(r.stdout).toMatch(/Apply complete: 2 created/);
    expect(String((await execa('blkid', ['-o', 'value', '-s', 'TYPE', dev])).stdout).trim()).toBe(fs);
    expect(await inNs(lv, 'findmnt', '-n', '-o', 'SOURCE,FSTYPE', p(`mnt-${fs}`))).toMatch(new RegExp(`${dev}\\s+${fs}`));
    expect(await virsh(lv, 'vol-dumpxml', '--pool', `${fs}pool`, `${fs}vol.qcow2`)).toMatch(/<capacity unit='bytes'>33554432</);
    expect(await inNs(lv, 'stat', '-c', '%s', p(`mnt-${fs}/${fs}vol.qcow2`))).toMatch(/^\d+$/);
    // Stopped (unmounted) and started again: the filesystem and its volume are still there.
    await virsh(lv, 'pool-destroy', `${fs}pool`);
    const again = await sb.run('apply', '-f', p(`${fs}.yaml`));
    expect(again.stdout).toMatch(/pools\.\w+pool: updating \(state inactive -> active\)/);
    expect(await virsh(lv, 'vol-list', `${fs}pool`)).toContain(`${fs}vol.qcow2`);
    const plan = await sb.run('plan', '-f', p(`${fs}.yaml`), '--detailed-exitcode');
    expect(plan.code, plan.stdout + plan.stderr).toBe(0);
  });
});

describe('storage deleted with the pool (deleteStorage: true)', () => {
  const blank = async (dev: string) => (await execa('blkid', ['-p', dev], { reject: false })).exitCode === 2;

  it('fs: the filesystem reconcile made is erased and its mount point removed, only while it holds nothing', async () => {
    const dev = await loopDevice('fs-del.img', '64M');
    const yaml = `version: 1\npools:\n  fsdel: { type: fs, path: $DIR/mnt-del, source: { device: ${dev}, format: ext4 }, deleteStorage: true }\n`;
    await sb.yaml(yaml, 'fsdel.yaml');
    expect((await sb.run('apply', '-f', p('fsdel.yaml'))).code).toBe(0);
    expect(await blank(dev)).toBe(false);
    // A file in the filesystem: the pool goes, the filesystem (and the file) stay.
    await inNs(lv, 'sh', '-c', `echo mine > ${p('mnt-del/notes.txt')}`);
    await sb.yaml('version: 1\n', 'fsdel.yaml');
    const kept = await sb.run('apply', '-f', p('fsdel.yaml'), '--prune');
    expect(kept.stdout).toMatch(/its storage is kept: it holds 1 thing\(s\) reconcile is not deleting \(notes\.txt\)/);
    expect(await blank(dev)).toBe(false);
    // Defined again on it: the filesystem was there, so it is not reconcile's to erase.
    await sb.yaml(yaml, 'fsdel.yaml');
    expect((await sb.run('apply', '-f', p('fsdel.yaml'))).code).toBe(0);
    await inNs(lv, 'rm', p('mnt-del/notes.txt'));
    await sb.yaml('version: 1\n', 'fsdel.yaml');
    expect((await sb.run('apply', '-f', p('fsdel.yaml'), '--prune')).stdout).toMatch(/its storage is kept: it was there before the pool/);
    expect(await blank(dev)).toBe(false);

    // A filesystem reconcile makes, empty (but for lost+found): erased, its mount point removed.
    await execa('wipefs', ['-a', dev]);
    await execa('rmdir', [p('mnt-del')]).catch(() => undefined);
    await sb.yaml(yaml, 'fsdel.yaml');
    expect((await sb.run('apply', '-f', p('fsdel.yaml'))).code).toBe(0);
    await sb.yaml('version: 1\n', 'fsdel.yaml');
    const plan = await sb.run('plan', '-f', p('fsdel.yaml'), '--prune');
    expect(plan.stdout).toMatch(new RegExp(`its storage deleted \\(deleteStorage: true, made by reconcile, empty: the ext4 filesystem it made on ${dev} erased\\)`));
    expect((await sb.run('apply', '-f', p('fsdel.yaml'), '--prune')).code).toBe(0);
    expect(await blank(dev)).toBe(true);
    expect(await execa('test', ['-e', p('mnt-del')], { reject: false }).then((r) => r.exitCode)).toBe(1);
  });

  it('fs: a file libvirt does not list (a control character in its name) keeps the filesystem (adversarial pass)', async () => {
    const dev = await loopDevice('fs-esc.img', '64M');
    await sb.yaml(`version: 1\npools:\n  fsesc: { type: fs, path: $DIR/mnt-esc, source: { device: ${dev}, format: ext4 }, deleteStorage: true }\n`, 'fsesc.yaml');
    expect((await sb.run('apply', '-f', p('fsesc.yaml'))).code).toBe(0);
    await inNs(lv, 'sh', '-c', `printf 'IMPORTANT' > "${p('mnt-esc')}/$(printf 'q\\033report')"`);
    await sb.yaml('version: 1\n', 'fsesc.yaml');
    const r = await sb.run('apply', '-f', p('fsesc.yaml'), '--prune');
    expect(r.code).toBe(0);
    expect(r.stdout).toMatch(/kept its filesystem: it holds q\\u001breport now/);
    expect(await blank(dev)).toBe(false);
  });

  it('disk: the partition label reconcile wrote is removed', async () => {
    const dev = await loopDevice('disk-del.img', '64M');
    await sb.yaml(`version: 1\npools:\n  diskdel: { type: disk, source: { device: ${dev}, format: gpt }, deleteStorage: true }\n`, 'diskdel.yaml');
    expect((await sb.run('apply', '-f', p('diskdel.yaml'))).code).toBe(0);
    expect(String((await execa('blkid', ['-p', '-o', 'value', '-s', 'PTTYPE', dev])).stdout).trim()).toBe('gpt');
    await sb.yaml('version: 1\n', 'diskdel.yaml');
    expect((await sb.run('apply', '-f', p('diskdel.yaml'), '--prune')).stdout).toMatch(/its storage deleted/);
    expect(await blank(dev)).toBe(true);
  });
});

describe('disk pool on a loop device', () => {
  it('writes a partition label and creates a partition volume', async () => {
    const dev = await loopDevice('disk.img', '200M');
    const part = `${path.basename(dev)}p1`;
    await sb.yaml(
      `version: 1\npools:\n  parts: { type: disk, source: { device: ${dev}, format: gpt } }\nimages:\n  data: { pool: parts, volume: ${part}, format: raw, size: 48M }\n`,
      'disk.yaml',
    );
    const r = await sb.run('apply', '-f', p('disk.yaml'));
    expect(r.stdout).toMatch(/Apply complete: 2 created/);
    expect(String((await execa('parted', ['-s', dev, 'print'])).stdout)).toMatch(/Partition Table: gpt/);
    expect(await virsh(lv, 'vol-list', 'parts')).toContain(part);
    expect(Number(/<capacity unit='bytes'>(\d+)</.exec(await virsh(lv, 'vol-dumpxml', '--pool', 'parts', part))![1])).toBeGreaterThanOrEqual(48 * 1024 * 1024);
    expect((await sb.run('plan', '-f', p('disk.yaml'), '--detailed-exitcode')).code).toBe(0);
  });

  it('says how to name a disk pool volume', async () => {
    await sb.yaml('version: 1\npools:\n  d2: { type: disk, source: { device: /dev/loop99 } }\nimages:\n  data: { pool: d2, format: raw, size: 1G }\n', 'bad-disk.yaml');
    const r = await sb.run('validate', '-f', p('bad-disk.yaml'));
    expect(r.stderr).toMatch(/bad-disk\.yaml:5:3: images\.data: a disk pool's volumes are partitions named after its device \(e\.g\. sdb1, loop0p1\); set volume:/);
  });
});

describe('iscsi-direct pool against tgtd on 127.0.0.1', () => {
  let tgtd: Tgtd | undefined;
  afterAll(() => tgtd?.stop());

  it('starts, lists the target LUNs as volumes, adopts a declared LUN and refuses a missing one', async () => {
    await execa('truncate', ['-s', '64M', p('lun1.img')]);
    tgtd = await startTgtd(17);
    await tgtd.target('iqn.2024-01.dev.test:store', p('lun1.img'));
    const port = tgtd.port;
    const yaml = `version: 1
pools:
  san:
    type: iscsi-direct
    source: { host: "127.0.0.1:${port}", device: iqn.2024-01.dev.test:store, initiator: iqn.2024-01.dev.test:reconcile }
images:
  lun: { pool: san, volume: "unit:0:0:1", format: raw }
`;
    await sb.yaml(yaml, 'san.yaml');
    const r = await sb.run('apply', '-f', p('san.yaml'));
    expect(r.code).toBe(0);
    expect(r.stdout).toMatch(/Apply complete: 1 created/);
    const xml = await virsh(lv, 'pool-dumpxml', 'san');
    expect(xml).toContain(`<host name='127.0.0.1' port='${port}'/>`);
    expect(xml).toContain("<iqn name='iqn.2024-01.dev.test:reconcile'/>");
    expect(await virsh(lv, 'pool-info', 'san')).toMatch(/State:\s+running/);
    expect(await virsh(lv, 'vol-list', 'san')).toContain('unit:0:0:1');
    const show = JSON.parse((await sb.run('show', '-f', p('san.yaml'), '-o', 'json')).stdout);
    expect(show.images[0]).toMatchObject({ name: 'lun', owner: 'adopted', status: 'in-sync' });
    expect((await sb.run('plan', '-f', p('san.yaml'), '--detailed-exitcode')).code).toBe(0);

    await sb.yaml(yaml.replace('unit:0:0:1', 'unit:0:0:5'), 'san.yaml');
    const missing = await sb.run('plan', '-f', p('san.yaml'));
    expect(missing.code).toBe(1);
    expect(missing.stdout).toMatch(/san is an iscsi-direct pool, whose volumes are the target's LUNs; there is no volume unit:0:0:5 \(it has: unit:0:0:0, unit:0:0:1\)/);
  });
});

describe('pool types this host cannot start', () => {
  const CASES = [
    {
      name: 'lvm',
      yaml: 'type: logical\n    source: { name: vg-vms, device: /dev/loop250 }',
      xml: ["<pool type='logical'>", '<name>vg-vms</name>', "<device path='/dev/loop250'/>", "<format type='lvm2'/>", '<path>/dev/vg-vms</path>'],
    },
    {
      name: 'nfs',
      yaml: 'type: netfs\n    path: $DIR/nfs-mnt\n    source: { host: 127.0.0.1, dir: /exports/vm-storage, format: nfs }',
      xml: ["<pool type='netfs'>", "<host name='127.0.0.1'/>", "<dir path='/exports/vm-storage'/>", "<format type='nfs'/>"],
    },
    {
      name: 'iscsi',
      yaml: 'type: iscsi\n    source: { host: 127.0.0.1, device: iqn.2023-01.com.example:storage, auth: { type: chap, username: initiator-user, secretFile: $DIR/chap } }',
      xml: [
        "<pool type='iscsi'>",
        "<host name='127.0.0.1'/>",
        "<device path='iqn.2023-01.com.example:storage'/>",
        "<auth type='chap' username='initiator-user'>",
        "<secret usage='virt-reconcile/pool/iscsi'/>",
        '<path>/dev/disk/by-path</path>',
      ],
    },
    {
      name: 'ceph',
      yaml: 'type: rbd\n    source: { host: "127.0.0.1:6789,127.0.0.2:6789", name: vm-pool, auth: { type: ceph, username: admin, secretFile: $DIR/ceph } }',
      xml: ["<pool type='rbd'>", "<host name='127.0.0.1' port='6789'/>", "<host name='127.0.0.2' port='6789'/>", '<name>vm-pool</name>', "<auth type='ceph' username='admin'>"],
    },
  ];

  it.each(CASES)('$name: defined with the right XML (round trip: a second apply changes nothing)', async (c) => {
    await writeFile(p('chap'), 'chap-secret-value');
    await writeFile(p('ceph'), 'AQBceph-key==');
    await sb.yaml(`version: 1\npools:\n  ${c.name}:\n    ${c.yaml}\n    active: false\n    autostart: false\n`, `${c.name}.yaml`);
    const r = await sb.run('apply', '-f', p(`${c.name}.yaml`));
    expect(r.stderr).toBe('');
    expect(r.code).toBe(0);
    const xml = await virsh(lv, 'pool-dumpxml', c.name);
    for (const frag of c.xml) expect(xml).toContain(frag);
    expect(await virsh(lv, 'pool-info', c.name)).toMatch(/State:\s+inactive/);
    expect((await sb.run('plan', '-f', p(`${c.name}.yaml`), '--detailed-exitcode')).code).toBe(0);
  });

  it('keeps pool secrets in libvirt, never in output or state', async () => {
    expect(await virsh(lv, 'secret-list')).toMatch(/virt-reconcile\/pool\/iscsi/);
    const state = await execa('cat', [path.join(sb.stateDir, 'inventory.json')]);
    expect(String(state.stdout)).not.toContain('chap-secret-value');
  });

  it.each([
    ['lvm', /could not (build|start) logical pool lvm: /],
    ['nfs', /could not (build|start) netfs pool nfs: /],
    ['iscsi', /could not (build|start) iscsi pool iscsi: /],
  ])('%s: activating it fails with a clear error naming the pool', async (name, message) => {
    const text = (await execa('cat', [p(`${name}.yaml`)])).stdout.replace('active: false', 'active: true');
    await writeFile(p(`${name}-on.yaml`), text);
    const r = await sb.run('apply', '-f', p(`${name}-on.yaml`));
    expect(r.code).toBe(1);
    expect(r.stdout).toMatch(new RegExp(`pools\\.${name}: FAILED: ${message.source}`));
  });
});
