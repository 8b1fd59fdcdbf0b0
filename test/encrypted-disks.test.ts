// LUKS images attached to a domain reconcile defines: the libvirt secret each needs (kept by
// reconcile from the image's passphraseFile, or a declared one), the <encryption> in the disk,
// a domain that starts, and a passphrase in no output or state file.
import { randomBytes } from 'node:crypto';
import { chmod, readdir, readFile, rm, stat, writeFile } from 'node:fs/promises';
import { execa } from 'execa';
import path from 'node:path';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { startPrivateLibvirtd, type PrivateLibvirtd } from '../src/dev/private-libvirtd.js';
import { allText, cli, diskOf, recorded, sandbox, virsh, type Sandbox } from './helpers.js';
import { startWatch, until } from './watch-helpers.js';

let lv: PrivateLibvirtd;
let sb: Sandbox;
const p = (f: string) => path.join(sb.dir, f);
const PASS = 'Luks-Pass-Sweep-8841';
const NEW = 'Rotated-Pass-Sweep-2207';

/** qemu-io on an image, opened with a passphrase (from a file of its own); throws if it fails. */
async function ioWith(pass: string, file: string, format: 'qcow2' | 'raw', command: string): Promise<void> {
  const key = p(`key-${randomBytes(4).toString('hex')}`);
  await writeFile(key, pass, { mode: 0o600 });
  try {
    const opts = format === 'qcow2' ? `driver=qcow2,encrypt.key-secret=k0,file.filename=${p(file)}` : `driver=luks,key-secret=k0,file.filename=${p(file)}`;
    const r = await execa('qemu-io', [...(command.startsWith('read') ? ['-r', '-U'] : []), '--object', `secret,id=k0,file=${key}`, '--image-opts', opts, '-c', command], {
      reject: false,
    });
    if (r.exitCode !== 0 || /fail|error|Pattern verification/i.test(String(r.stdout) + String(r.stderr))) throw new Error(`qemu-io ${command} on ${file}: ${r.stdout}${r.stderr}`);
  } finally {
    await rm(key, { force: true });
  }
}

const opens = (pass: string, file: string, format: 'qcow2' | 'raw') =>
  ioWith(pass, file, format, 'read 0 512').then(
    () => true,
    () => false,
  );

/**
 * Every process's argv and environment, read again and again until `done` settles: the
 * passphrases seen there (none expected).
 */
async function sampleProcesses(done: Promise<unknown>, words: string[]): Promise<string[]> {
  let over = false;
  void done.finally(() => (over = true));
  const seen = new Set<string>();
  while (!over) {
    for (const pid of await readdir('/proc')) {
      if (!/^\d+$/.test(pid) || Number(pid) === process.pid) continue;
      for (const f of ['cmdline', 'environ']) {
        const t = await readFile(`/proc/${pid}/${f}`, 'latin1').catch(() => '');
        for (const w of words) if (t.includes(w)) seen.add(`${w} in /proc/${pid}/${f}: ${t.replaceAll('\0', ' ').slice(0, 200)}`);
      }
    }
    await new Promise((r) => setTimeout(r, 50));
  }
  return [...seen];
}

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
  eroot: { path: $DIR/root.qcow2, size: 32M, encryption: { format: luks, passphraseFile: $DIR/pass, iterTime: 10 } }
  edata: { path: $DIR/data.luks, format: raw, size: 16M, encryption: { format: luks, passphraseFile: $DIR/pass, iterTime: 10 } }
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
    // The state directory is its owner's alone: nothing in it readable by group or others.
    const open = (await readdir(sb.stateDir, { recursive: true, withFileTypes: true })).map((e) => path.join(e.parentPath, e.name));
    for (const f of [sb.stateDir, ...open]) expect(((await stat(f)).mode & 0o077).toString(8), f).toBe('0');
  });

  it('a changed passphraseFile re-keys both images in place (a paused helper domain): the old passphrase no longer opens them, the data stays, the VM starts', async () => {
    await ioWith(PASS, 'root.qcow2', 'qcow2', 'write -P 0x5a 1M 1M');
    await ioWith(PASS, 'data.luks', 'raw', 'write -P 0xa5 2M 1M');
    await writeFile(p('pass'), NEW, { mode: 0o600 });
    await sb.resetTrace();
    const plan = await sb.run('plan');
    expect(plan.stdout).toMatch(/secrets\.image\/eroot\s+update\s+passphrase file changed \(.*pass\): .*root\.qcow2 is re-keyed in place unless it opens with it already/);
    const applying = sb.start('apply');
    const seen = await sampleProcesses(applying.exited, [PASS, NEW]);
    expect(await applying.exited, applying.stdout() + applying.stderr()).toBe(0);
    expect(applying.stdout()).toMatch(
      /root\.qcow2: re-keyed in place through a paused helper domain \(vr-rekey-[0-9a-f]+\): a keyslot for the new passphrase added, the old passphrase's keyslots erased/,
    );
    expect(applying.stdout()).toMatch(/data\.luks: re-keyed in place/);
    for (const [f, fmt] of [
      ['root.qcow2', 'qcow2'],
      ['data.luks', 'raw'],
    ] as const) {
      expect(await opens(PASS, f, fmt)).toBe(false);
      expect(await opens(NEW, f, fmt)).toBe(true);
    }
    await ioWith(NEW, 'root.qcow2', 'qcow2', 'read -P 0x5a 1M 1M');
    await ioWith(NEW, 'data.luks', 'raw', 'read -P 0xa5 2M 1M');
    expect(await virsh(lv, 'list', '--all', '--name')).not.toMatch(/vr-rekey/);
    expect((await sb.run('plan')).stdout).toMatch(/No changes/);
    await virsh(lv, 'start', 'encvm');
    await virsh(lv, 'destroy', 'encvm');
    expect(seen).toEqual([]);
    for (const text of [plan.stdout, plan.stderr, applying.stdout(), applying.stderr(), await allText(sb.stateDir), JSON.stringify(await sb.spawned())]) {
      expect(text).not.toContain(PASS);
      expect(text).not.toContain(NEW);
    }
    expect(await virsh(lv, 'secret-dumpxml', (await recorded(sb.stateDir))['secret:image/eroot'].uuid)).not.toContain(NEW);
  });

  it('while the domain runs, the re-key goes through its own QEMU: it keeps running, and starts again with the new passphrase', async () => {
    await virsh(lv, 'start', 'encvm');
    try {
      await writeFile(p('pass'), PASS, { mode: 0o600 });
      const r = await sb.run('apply');
      expect(r.code, r.stdout + r.stderr).toBe(0);
      expect(r.stdout).toMatch(/root\.qcow2: re-keyed in place through running domain encvm/);
      expect(r.stdout).toMatch(/data\.luks: re-keyed in place through running domain encvm/);
      expect((await virsh(lv, 'domstate', 'encvm')).trim()).toBe('running');
      expect(await opens(NEW, 'root.qcow2', 'qcow2')).toBe(false);
      expect(await opens(PASS, 'root.qcow2', 'qcow2')).toBe(true);
      // Again without a restart: its QEMU still holds the passphrase it started with, which the
      // image no longer takes — said plainly, nothing changed (adversarial pass: a bare QEMU error).
      await writeFile(p('pass'), 'Third-Pass-While-Running', { mode: 0o600 });
      const again = await sb.run('apply');
      expect(again.code).toBe(1);
      expect(again.stdout).toMatch(
        /root\.qcow2: domain encvm has had it open since before its last passphrase change, .*nothing was changed\. Restart the domain \(or shut it off\) and apply again/,
      );
      expect(await opens(PASS, 'root.qcow2', 'qcow2')).toBe(true);
      await writeFile(p('pass'), PASS, { mode: 0o600 });
    } finally {
      await virsh(lv, 'destroy', 'encvm');
    }
    await virsh(lv, 'start', 'encvm');
    await virsh(lv, 'destroy', 'encvm');
    await ioWith(PASS, 'root.qcow2', 'qcow2', 'read -P 0x5a 1M 1M');
    expect((await sb.run('plan')).stdout).toMatch(/No changes/);
  });

  it('a re-key killed at any step resumes on the next apply, and the VM starts with the passphrase the secret holds', async () => {
    // (Not 'rekey-started': nothing has changed by then, an apply from scratch.)
    for (const [point, other] of [
      ['rekey-added', NEW],
      ['rekey-keyed', PASS],
    ] as const) {
      const from = other === NEW ? PASS : NEW;
      await writeFile(p('pass'), other, { mode: 0o600 });
      const crashed = await cli(
        ['apply', '-f', path.join(sb.dir, 'storage.yaml'), '--state-dir', sb.stateDir, '--connect', lv.uri],
        { VIRT_RECONCILE_FAILPOINT: point },
        lv.nsenter,
      );
      expect(crashed.code, `${point}: ${crashed.stdout}${crashed.stderr}`).not.toBe(0);
      const plan = await sb.run('plan');
      expect(plan.stdout, point).toMatch(/re-key of .* interrupted/);
      const r = await sb.run('apply');
      expect(r.code, `${point}: ${r.stdout}${r.stderr}`).toBe(0);
      expect(await opens(from, 'root.qcow2', 'qcow2'), point).toBe(false);
      expect(await opens(other, 'root.qcow2', 'qcow2'), point).toBe(true);
      expect((await sb.run('plan')).stdout, point).toMatch(/No changes/);
      await virsh(lv, 'start', 'encvm');
      await virsh(lv, 'destroy', 'encvm');
    }
    await writeFile(p('pass'), PASS, { mode: 0o600 });
    expect((await sb.run('apply')).code).toBe(0);
    await ioWith(PASS, 'root.qcow2', 'qcow2', 'read -P 0x5a 1M 1M');
    // Killed once it opens only with the new passphrase, then the file changed again: the
    // secret must not be set to a passphrase that opens nothing (adversarial pass: it was, and
    // the next plan said in sync). Refused until the file holds the one it was re-keyed to.
    await writeFile(p('pass'), NEW, { mode: 0o600 });
    const crashed = await cli(
      ['apply', '-f', path.join(sb.dir, 'storage.yaml'), '--state-dir', sb.stateDir, '--connect', lv.uri],
      { VIRT_RECONCILE_FAILPOINT: 'rekey-keyed' },
      lv.nsenter,
    );
    expect(crashed.code).not.toBe(0);
    await writeFile(p('pass'), 'Yet-Another-Pass-3131', { mode: 0o600 });
    const refused = await sb.run('apply');
    expect(refused.code).toBe(1);
    expect(refused.stderr + refused.stdout).toMatch(
      /an interrupted apply was re-keying .*root\.qcow2 to the passphrase .*pass held then, and the file has changed since; .*Put it back/,
    );
    expect(await opens(NEW, 'root.qcow2', 'qcow2')).toBe(true);
    await writeFile(p('pass'), NEW, { mode: 0o600 });
    expect((await sb.run('apply')).code).toBe(0);
    await writeFile(p('pass'), PASS, { mode: 0o600 });
    expect((await sb.run('apply')).code).toBe(0);
    await virsh(lv, 'start', 'encvm');
    await virsh(lv, 'destroy', 'encvm');
  });

  it('a secret that no longer holds the passphrase opening the image: the re-key says to declare previousPassphraseFile, and with it qemu-img re-keys the image', async () => {
    // Its secret lost the passphrase (set by hand to another): the helper domain cannot open it.
    const uuid = (await recorded(sb.stateDir))['secret:image/eroot'].uuid as string;
    await writeFile(p('wrong'), 'Not-The-Passphrase-99', { mode: 0o600 });
    await virsh(lv, 'secret-set-value', uuid, '--file', p('wrong'), '--plain');
    await writeFile(p('pass'), NEW, { mode: 0o600 });
    const refused = await sb.run('apply');
    expect(refused.code).toBe(1);
    expect(refused.stdout).toMatch(
      /root\.qcow2: its libvirt secret does not open it \(nor does the new passphrase\); nothing is changed\. Declare encryption\.previousPassphraseFile/,
    );
    expect(await opens(PASS, 'root.qcow2', 'qcow2')).toBe(true);
    await writeFile(p('old'), PASS, { mode: 0o600 });
    await sb.yaml(
      YAML.replace(
        'eroot: { path: $DIR/root.qcow2, size: 32M, encryption: { format: luks, passphraseFile: $DIR/pass,',
        'eroot: { path: $DIR/root.qcow2, size: 32M, encryption: { format: luks, passphraseFile: $DIR/pass, previousPassphraseFile: $DIR/old,',
      ),
    );
    const r = await sb.run('apply');
    expect(r.code, r.stdout + r.stderr).toBe(0);
    expect(r.stdout).toMatch(
      /root\.qcow2: re-keyed in place through qemu-img amend with previousPassphraseFile: a keyslot for the new passphrase added, the old passphrase's keyslots erased/,
    );
    expect(await opens(PASS, 'root.qcow2', 'qcow2')).toBe(false);
    expect(await opens(NEW, 'root.qcow2', 'qcow2')).toBe(true);
    await virsh(lv, 'start', 'encvm');
    await virsh(lv, 'destroy', 'encvm');
    await writeFile(p('pass'), PASS, { mode: 0o600 });
    await sb.yaml(YAML);
    expect((await sb.run('apply')).code).toBe(0);
  });

  it('a kept secret is not undefined while a domain the YAML does not declare still opens its image with it (adversarial pass)', async () => {
    const hand = `<domain type='qemu'><name>hand</name><memory unit='MiB'>64</memory><os><type>hvm</type></os><devices><disk type='file' device='disk'><driver name='qemu' type='qcow2'/><source file='${p('root.qcow2')}'><encryption format='luks'><secret type='passphrase' usage='${p('root.qcow2')}'/></encryption></source><target dev='vda' bus='virtio'/></disk></devices></domain>`;
    await writeFile(p('hand.xml'), hand);
    await virsh(lv, 'define', p('hand.xml'));
    try {
      // The VM and its images leave the YAML: the secrets have no declared user any more.
      await sb.yaml('version: 1\n');
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

  // libvirt makes pool volumes with qemu-img's default key derivation (2 s per keyslot): every
  // open, re-key step and check here costs that, several times over on a loaded host without KVM.
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
    // Data on both, to find intact after two passphrase changes.
    await ioWith(PASS, 'encpool/evq.qcow2', 'qcow2', 'write -P 0x7c 1M 1M');
    await ioWith(PASS, 'encpool/evr.img', 'raw', 'write -P 0x7d 1M 1M');
    await virsh(lv, 'start', 'encvm2');
    try {
      expect(await virsh(lv, 'domblklist', 'encvm2')).toMatch(/vda\s+evq\.qcow2[\s\S]*vdb\s+evr\.img/);
      // A new passphrase while it runs: both volumes re-keyed through its QEMU.
      await ioWith(PASS, 'encpool/evq.qcow2', 'qcow2', 'read 0 512');
      await writeFile(p('pass'), NEW, { mode: 0o600 });
      const rekey = await sb.run('apply');
      expect(rekey.code, rekey.stdout + rekey.stderr).toBe(0);
      expect(rekey.stdout).toMatch(/evq\.qcow2: re-keyed in place through running domain encvm2/);
      expect(rekey.stdout).toMatch(/evr\.img: re-keyed in place through running domain encvm2/);
      expect(await opens(PASS, 'encpool/evr.img', 'raw')).toBe(false);
      expect(await opens(NEW, 'encpool/evr.img', 'raw')).toBe(true);
      expect(await opens(NEW, 'encpool/evq.qcow2', 'qcow2')).toBe(true);
      expect((await sb.run('plan')).stdout).toMatch(/No changes/);
    } finally {
      await virsh(lv, 'destroy', 'encvm2');
      await writeFile(p('pass'), PASS, { mode: 0o600 });
    }
    // And back while it is shut off: through the paused helper domain.
    const back = await sb.run('apply');
    expect(back.code, back.stdout + back.stderr).toBe(0);
    expect(back.stdout).toMatch(/evq\.qcow2: re-keyed in place through a paused helper domain/);
    expect(await opens(NEW, 'encpool/evq.qcow2', 'qcow2')).toBe(false);
    expect(await opens(PASS, 'encpool/evr.img', 'raw')).toBe(true);
    await ioWith(PASS, 'encpool/evq.qcow2', 'qcow2', 'read -P 0x7c 1M 1M');
    await ioWith(PASS, 'encpool/evr.img', 'raw', 'read -P 0x7d 1M 1M');
    await virsh(lv, 'start', 'encvm2');
    await virsh(lv, 'destroy', 'encvm2');
    await sb.yaml('version: 1\n');
    expect((await sb.run('apply', '--prune')).code).toBe(0);
    expect(await virsh(lv, 'secret-list')).not.toContain(p('encpool'));
  }, 300_000);

  it('the watch service re-keys on a changed passphraseFile, and its /status, /metrics, page and log hold no passphrase; --strict refuses a passphrase file others can read', async () => {
    await writeFile(p('pass'), PASS, { mode: 0o600 });
    const conf = await sb.yaml(YAML);
    const w = await startWatch(sb, ['-f', conf, '--interval', '2s', '--connect', lv.uri], lv.nsenter);
    await until(async () => (await fetch(`${w.url}/readyz`)).status === 200, 'ready', 60_000);
    await writeFile(p('pass'), NEW, { mode: 0o600 });
    await until(() => opens(NEW, 'root.qcow2', 'qcow2'), 'the watch service to re-key root.qcow2', 60_000);
    await until(async () => /re-keyed in place[\s\S]*re-keyed in place/.test(w.log()), 'both re-keys to end', 60_000);
    const texts = [w.log(), JSON.stringify(await w.status()), await (await fetch(`${w.url}/metrics`)).text(), await (await fetch(`${w.url}/`)).text()];
    w.proc.kill('SIGTERM');
    await w.exit();
    for (const t of texts) {
      expect(t).not.toContain(PASS);
      expect(t).not.toContain(NEW);
    }
    expect(await opens(PASS, 'data.luks', 'raw')).toBe(false);
    await chmod(p('pass'), 0o644);
    try {
      const plan = await sb.run('plan', '--strict');
      expect(plan.code).toBe(1);
      expect(plan.stdout + plan.stderr).toMatch(/images\.eroot: passphraseFile .*pass can be read by others than its owner \(mode 0644\); chmod 600 it \(an error with --strict\)/);
      expect(plan.stdout + plan.stderr).toMatch(/Plan refused: 2 warning\(s\) are errors with --strict; /);
      const apply = await sb.run('apply', '--strict');
      expect(apply.code).toBe(1);
      expect(apply.stderr).toMatch(/nothing was applied/);
      expect((await sb.run('plan')).code).toBe(0);
    } finally {
      await chmod(p('pass'), 0o600);
    }
    // validate tells the YAML's secrets from the ones kept for its encrypted images.
    expect((await sb.run('validate')).stdout).toMatch(/0 secret\(s\) \(and 2 kept for encrypted images\)/);
    await sb.yaml('version: 1\n');
    expect((await sb.run('apply', '--prune')).code).toBe(0);
  });
});
