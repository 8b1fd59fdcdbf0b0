// What a guest sees of its drives beyond the image: disk identity (serial, wwn, vendor,
// product) kept by drift healing; CD-ROM drives; cloud-init NoCloud seeds built as ISO files
// and as pool volumes, rebuilt when their files change; ISO files imported into a pool.
import { chmod, readFile, writeFile } from 'node:fs/promises';
import path from 'node:path';
import { execa } from 'execa';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { startPrivateLibvirtd, type PrivateLibvirtd } from '../src/dev/private-libvirtd.js';
import { allText, diskOf, qemuImg, sandbox, virsh, type Sandbox } from './helpers.js';

let lv: PrivateLibvirtd;
let sb: Sandbox;
const p = (f: string) => path.join(sb.dir, f);

beforeAll(async () => {
  lv = await startPrivateLibvirtd();
  sb = await sandbox('devices', { libvirt: lv });
  await chmod(sb.dir, 0o755);
});
afterAll(async () => {
  try {
    await lv?.stop();
  } finally {
    await sb?.cleanup();
  }
});

/** A file's content inside an ISO image, and the image's volume label. */
async function fromIso(iso: string, name: string): Promise<{ label: string; content: string }> {
  const out = p(`extracted-${name}`);
  await execa('xorriso', ['-osirrox', 'on', '-indev', iso, '-extract', `/${name}`, out]);
  const info = await execa('xorriso', ['-indev', iso, '-pvd_info'], { all: true });
  const label = /Volume id\s*:\s*'([^']*)'/.exec(info.all ?? '')?.[1] ?? '';
  const content = await readFile(out, 'utf8');
  await execa('rm', ['-f', out]);
  return { label, content };
}

describe('disk identity', () => {
  it('sets serial, wwn, vendor and product, and restores them when edited away', async () => {
    await sb.yaml(`version: 1
images:
  idroot: { path: $DIR/idroot.qcow2, size: 16M }
  iddata: { path: $DIR/iddata.raw, format: raw, size: 16M }
vms:
  ident:
    create: { memory: 64M, vcpus: 1 }
    disks:
      - { image: idroot, serial: ROOT-0001 }
      - { image: iddata, bus: scsi, wwn: "0x5000C50015EA71AD", vendor: ACME, product: Fast Disk, serial: D 2 }
`);
    const r = await sb.run('apply');
    expect(r.code).toBe(0);
    const xml = await virsh(lv, 'dumpxml', '--inactive', 'ident');
    expect(diskOf(xml, 'vda')).toMatch(/<serial>ROOT-0001<\/serial>/);
    expect(diskOf(xml, 'sda')).toMatch(/<serial>D 2<\/serial>[\s\S]*<wwn>0x5000C50015EA71AD<\/wwn>[\s\S]*<vendor>ACME<\/vendor>[\s\S]*<product>Fast Disk<\/product>/);
    expect((await sb.run('plan')).stdout).toMatch(/No changes/);

    // Someone redefines the domain with another serial, vendor and a wwn spelled otherwise.
    const edited = xml.replace('ROOT-0001', 'HACKED').replace('<vendor>ACME', '<vendor>EVIL').replace('0x5000C50015EA71AD', '5000c50015ea71ad');
    await writeFile(p('ident.xml'), edited);
    await virsh(lv, 'define', p('ident.xml'));
    const plan = await sb.run('plan');
    expect(plan.stdout).toMatch(/vda serial: HACKED -> ROOT-0001/);
    expect(plan.stdout).toMatch(/sda vendor: EVIL -> ACME/);
    expect(plan.stdout).not.toMatch(/wwn/); // the same number
    expect((await sb.run('apply')).code).toBe(0);
    const healed = await virsh(lv, 'dumpxml', '--inactive', 'ident');
    expect(diskOf(healed, 'vda')).toMatch(/<serial>ROOT-0001<\/serial>/);
    expect(diskOf(healed, 'sda')).toMatch(/<vendor>ACME<\/vendor>/);
    expect((await sb.run('plan')).stdout).toMatch(/No changes/);
  });
});

describe('CD-ROMs and cloud-init seeds', () => {
  const PASSWORD = 'SEEKRIT-pw-4711';

  it('builds a NoCloud seed ISO (label cidata) and attaches it as a read-only sata cdrom; the user-data never reaches output or state', async () => {
    await writeFile(p('user-data'), `#cloud-config\nchpasswd: { list: "root:${PASSWORD}" }\n`);
    await writeFile(p('network-config'), 'version: 2\nethernets: {}\n');
    await sb.yaml(`version: 1
defaults:
  disk: { bus: virtio, cache: none, io: native }
images:
  seed:
    path: $DIR/seed.iso
    format: raw
    source: { cloudInit: { userData: $DIR/user-data, networkConfig: $DIR/network-config } }
vms:
  ci:
    create: { memory: 64M, vcpus: 1 }
    disks:
      - { image: seed, device: cdrom }
`);
    const plan = await sb.run('plan', '-o', 'json');
    expect(plan.code).toBe(0);
    const r = await sb.run('apply');
    expect(r.code).toBe(0);
    const iso = await fromIso(p('seed.iso'), 'user-data');
    expect(iso.label).toBe('cidata');
    expect(iso.content).toContain(PASSWORD);
    expect((await fromIso(p('seed.iso'), 'meta-data')).content).toBe('instance-id: seed\n');
    expect((await fromIso(p('seed.iso'), 'network-config')).content).toBe('version: 2\nethernets: {}\n');
    const cd = diskOf(await virsh(lv, 'dumpxml', '--inactive', 'ci'), 'sda');
    expect(cd).toMatch(/device='cdrom'/);
    expect(cd).toMatch(/bus='sata'/);
    expect(cd).toMatch(/<readonly\/>/);
    for (const text of [plan.stdout, plan.stderr, r.stdout, r.stderr, await allText(sb.stateDir)]) expect(text).not.toContain(PASSWORD);
    expect((await sb.run('plan')).stdout).toMatch(/No changes/);
  });

  it('is rebuilt when its files change, without --allow-replace (it holds nothing else), and the drive keeps it', async () => {
    await writeFile(p('user-data'), `#cloud-config\nchpasswd: { list: "root:${PASSWORD}" }\nruncmd: [touch /done]\n`);
    const plan = await sb.run('plan');
    expect(plan.stdout).toMatch(/images\.seed\s+replace\s+cloud-init seed files changed/);
    expect(plan.stdout).not.toContain(PASSWORD);
    expect((await sb.run('apply')).code).toBe(0);
    expect((await fromIso(p('seed.iso'), 'user-data')).content).toContain('runcmd');
    expect((await sb.run('plan')).stdout).toMatch(/No changes/);
  });

  it('a seed file that cannot be read is a refusal naming it, and nothing changes', async () => {
    const before = await readFile(p('seed.iso'));
    await execa('mv', [p('network-config'), p('network-config.away')]);
    try {
      const r = await sb.run('apply');
      expect(r.code).toBe(1);
      expect(r.stderr + r.stdout).toMatch(/storage\.yaml:\d+:\d+: cloud-init seed: cannot read .*network-config.*ENOENT/);
      expect(await readFile(p('seed.iso'))).toEqual(before);
    } finally {
      await execa('mv', [p('network-config.away'), p('network-config')]);
    }
  });

  it('builds seeds as pool volumes, imports an ISO file into a pool, and attaches both as cdroms; nothing is rebuilt afterwards', async () => {
    await qemuImg('create', '-q', '-f', 'raw', p('blank.raw'), '1M');
    await execa('xorriso', ['-as', 'genisoimage', '-quiet', '-output', p('installer.iso'), '-volid', 'INSTALL', p('blank.raw')]);
    await sb.yaml(
      `version: 1
pools:
  isos: { type: dir, path: $DIR/isos }
images:
  vseed:
    pool: isos
    volume: seed.iso
    format: raw
    source: { cloudInit: { userData: $DIR/user-data, metaData: $DIR/meta-data } }
  installer:
    pool: isos
    volume: installer.iso
    format: raw
    source: { file: $DIR/installer.iso }
vms:
  ci2:
    create: { memory: 64M, vcpus: 1 }
    disks:
      - { image: vseed, device: cdrom, bus: scsi }
      - { image: installer, device: cdrom, bus: ide }
`,
      'pool.yaml',
    );
    await writeFile(p('meta-data'), 'instance-id: ci2\nlocal-hostname: ci2\n');
    const r = await sb.run('apply', '-f', p('pool.yaml'));
    expect(r.code).toBe(0);
    const vol = (await virsh(lv, 'vol-path', '--pool', 'isos', 'seed.iso')).trim();
    expect((await fromIso(vol, 'meta-data')).content).toBe('instance-id: ci2\nlocal-hostname: ci2\n');
    const xml = await virsh(lv, 'dumpxml', '--inactive', 'ci2');
    expect(diskOf(xml, 'sda')).toMatch(/type='volume' device='cdrom'[\s\S]*<source pool='isos' volume='seed\.iso'\/>[\s\S]*bus='scsi'/);
    expect(diskOf(xml, 'hda')).toMatch(/type='volume' device='cdrom'[\s\S]*<source pool='isos' volume='installer\.iso'\/>[\s\S]*bus='ide'/);
    // libvirt calls an ISO in a dir pool format "iso": it is the raw volume that was made.
    expect((await sb.run('plan', '-f', p('pool.yaml'))).stdout).toMatch(/No changes/);

    await writeFile(p('meta-data'), 'instance-id: ci2\nlocal-hostname: ci2-renamed\n');
    expect((await sb.run('apply', '-f', p('pool.yaml'))).stdout).toMatch(/images\.vseed: replaced/);
    expect((await fromIso((await virsh(lv, 'vol-path', '--pool', 'isos', 'seed.iso')).trim(), 'meta-data')).content).toMatch(/ci2-renamed/);
    expect((await sb.run('plan', '-f', p('pool.yaml'))).stdout).toMatch(/No changes/);
  });
});
