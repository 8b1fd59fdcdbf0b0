// LUKS images attached to a domain reconcile defines: the libvirt secret each needs (kept by
// reconcile from the image's passphraseFile, or a declared one), the <encryption> in the disk,
// a domain that starts, and a passphrase in no output or state file.
import { chmod, writeFile } from 'node:fs/promises';
import path from 'node:path';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { startPrivateLibvirtd, type PrivateLibvirtd } from '../src/dev/private-libvirtd.js';
import { allText, diskOf, sandbox, virsh, type Sandbox } from './helpers.js';

let lv: PrivateLibvirtd;
let sb: Sandbox;
const p = (f: string) => path.join(sb.dir, f);
const PASS = 'Luks-Pass-Sweep-8841';

beforeAll(async () => {
  lv = await startPrivateLibvirtd();
  sb = await sandbox('encdisks', { libvirt: lv });
  await chmod(sb.dir, 0o755);
});
afterAll(async () => {
  try {
    await lv?.stop();
  } finally {
    await sb?.cleanup();
  }
});

const YAML = `version: 1
images:
  eroot: { path: $DIR/root.qcow2, size: 32M, encryption: { format: luks, passphraseFile: $DIR/pass } }
  edata: { path: $DIR/data.luks, format: raw, size: 16M, encryption: { format: luks, passphraseFile: $DIR/pass } }
vms:
  encvm:
    create: { memory: 64M, vcpus: 1 }
    disks:
      - { image: eroot }
      - { image: edata }
`;

describe('encrypted images as VM disks', () => {
  it('get a secret each, are attached with <encryption>, and the domain starts; the passphrase is nowhere', async () => {
    await writeFile(p('pass'), PASS, { mode: 0o600 });
    await sb.yaml(YAML);
    await sb.resetTrace();
    const plan = await sb.run('plan', '-o', 'json');
    const r = await sb.run('apply');
    expect(r.code, r.stdout + r.stderr).toBe(0);
    expect(r.stdout).toMatch(/secrets\.image\/eroot: created/);
    const secrets = await virsh(lv, 'secret-list');
    expect(secrets).toContain(`volume ${p('root.qcow2')}`);
    expect(secrets).toContain(`volume ${p('data.luks')}`);
    const xml = await virsh(lv, 'dumpxml', '--inactive', 'encvm');
    expect(diskOf(xml, 'vda')).toMatch(
      new RegExp(
        `<driver name='qemu' type='qcow2'/>[\\s\\S]*<source file='${p('root.qcow2')}'>\\s*<encryption format='luks'[^>]*>\\s*<secret type='passphrase' usage='${p('root.qcow2')}'/>`,
      ),
    );
    expect(diskOf(xml, 'vdb')).toMatch(
      new RegExp(`<driver name='qemu' type='raw'/>[\\s\\S]*<encryption format='luks'[^>]*>\\s*<secret type='passphrase' usage='${p('data.luks')}'/>`),
    );
    expect((await sb.run('plan')).stdout).toMatch(/No changes/);
    await virsh(lv, 'start', 'encvm');
    try {
      const blk = await virsh(lv, 'domblklist', 'encvm');
      expect(blk).toMatch(/vda\s+\S*root\.qcow2/);
      expect(blk).toMatch(/vdb\s+\S*data\.luks/);
    } finally {
      await virsh(lv, 'destroy', 'encvm');
    }
    for (const text of [plan.stdout, plan.stderr, r.stdout, r.stderr, await allText(sb.stateDir), JSON.stringify(await sb.spawned())]) expect(text).not.toContain(PASS);
  });

  it('a changed passphraseFile is not set in the secret when it does not open the image: the VM still starts (adversarial pass)', async () => {
    await writeFile(p('pass'), 'a-new-passphrase', { mode: 0o600 });
    try {
      const r = await sb.run('apply');
      expect(r.code).toBe(1);
      expect(r.stdout).toMatch(/secrets\.image\/eroot: FAILED: the passphrase in .*pass does not open .*root\.qcow2; the secret is left as it was/);
      await virsh(lv, 'start', 'encvm');
      await virsh(lv, 'destroy', 'encvm');
    } finally {
      await writeFile(p('pass'), PASS, { mode: 0o600 });
    }
    expect((await sb.run('plan')).stdout).toMatch(/No changes/);
  });

  it('a kept secret is not undefined while a domain the YAML does not declare still opens its image with it (adversarial pass)', async () => {
    const hand = `<domain type='qemu'><name>hand</name><memory unit='MiB'>64</memory><os><type>hvm</type></os><devices><disk type='file' device='disk'><driver name='qemu' type='qcow2'/><source file='${p('root.qcow2')}'><encryption format='luks'><secret type='passphrase' usage='${p('root.qcow2')}'/></encryption></source><target dev='vda' bus='virtio'/></disk></devices></domain>`;
    await writeFile(p('hand.xml'), hand);
    await virsh(lv, 'define', p('hand.xml'));
    try {
      // The VM leaves the YAML, its images stay: the secrets have no declared user any more.
      await sb.yaml(YAML.slice(0, YAML.indexOf('vms:')));
      const r = await sb.run('apply', '--prune');
      expect(r.code).toBe(1);
      expect(r.stderr + r.stdout).toMatch(
        /secret image\/eroot left the YAML, but domain hand still has .*root\.qcow2 as a disk, which it opens with this secret; it is not undefined/,
      );
      expect(await virsh(lv, 'secret-list')).toContain(p('root.qcow2'));
    } finally {
      await virsh(lv, 'undefine', 'hand');
    }
    await sb.yaml(YAML);
    expect((await sb.run('apply')).code).toBe(0);
  });

  it('a secret declared with the image path as its usage is used instead (the kept one moves to its name); all go with --prune once no VM uses them', async () => {
    await writeFile(p('other-pass'), PASS, { mode: 0o600 });
    const before = (await virsh(lv, 'secret-list')).split('\n').find((l) => l.includes(p('root.qcow2')))!;
    await sb.yaml(`${YAML}secrets:\n  root-key: { usage: volume, volume: $DIR/root.qcow2, valueFile: $DIR/other-pass }\n`);
    const r = await sb.run('apply', '--prune');
    expect(r.code, r.stdout + r.stderr).toBe(0);
    // The same libvirt secret, still reconcile's, recorded under its new name (not made twice, not undefined).
    expect(r.stdout).toMatch(/secrets\.root-key: updated/);
    expect(r.stdout).toMatch(/inventory:secret:image\/eroot: .*declared now as secrets\.root-key/);
    expect((await virsh(lv, 'secret-list')).split('\n').filter((l) => l.includes(p('root.qcow2')))).toEqual([before]);
    expect((await sb.run('plan')).stdout).toMatch(/No changes/);
    await sb.yaml('version: 1\n');
    expect((await sb.run('apply', '--prune')).code).toBe(0);
    const left = await virsh(lv, 'secret-list');
    expect(left).not.toContain(p('data.luks'));
    expect(left).not.toContain(p('root.qcow2'));
  });

  it('encrypted pool volumes (qcow2 and raw) are made with their secret, attached, and the domain starts', async () => {
    await sb.yaml(`version: 1
pools:
  encp: { type: dir, path: $DIR/encpool, deleteStorage: true }
images:
  evq: { pool: encp, size: 16M, encryption: { format: luks, passphraseFile: $DIR/pass } }
  evr: { pool: encp, format: raw, size: 16M, encryption: { format: luks, passphraseFile: $DIR/pass } }
vms:
  encvm2:
    create: { memory: 64M, vcpus: 1 }
    disks:
      - { image: evq }
      - { image: evr }
`);
    const r = await sb.run('apply');
    expect(r.code, r.stdout + r.stderr).toBe(0);
    const vol = await virsh(lv, 'vol-dumpxml', '--pool', 'encp', 'evq.qcow2');
    expect(vol).toMatch(new RegExp(`<encryption format='luks'>\\s*<secret type='passphrase' usage='${p('encpool/evq.qcow2')}'/>`));
    const xml = await virsh(lv, 'dumpxml', '--inactive', 'encvm2');
    expect(diskOf(xml, 'vdb')).toMatch(/<source pool='encp' volume='evr\.img'>\s*<encryption format='luks'/);
    expect((await sb.run('plan')).stdout).toMatch(/No changes/);
    await virsh(lv, 'start', 'encvm2');
    try {
      expect(await virsh(lv, 'domblklist', 'encvm2')).toMatch(/vda\s+evq\.qcow2[\s\S]*vdb\s+evr\.img/);
    } finally {
      await virsh(lv, 'destroy', 'encvm2');
    }
    await sb.yaml('version: 1\n');
    expect((await sb.run('apply', '--prune')).code).toBe(0);
    expect(await virsh(lv, 'secret-list')).not.toContain(p('encpool'));
  });
});
