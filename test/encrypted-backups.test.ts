// Backups of LUKS disks (qcow2-embedded and raw) in every mode that copies: the copies are
// encrypted with the disk's passphrase (no guest data in clear in any file), verified through
// it, and restored encrypted with the disk's passphrase as it is now — also a copy made
// before a passphrase change, given the passphrase it was made with.
import { randomBytes } from 'node:crypto';
import { chmod, readFile, readdir, rm, writeFile } from 'node:fs/promises';
import path from 'node:path';
import { execa } from 'execa';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { startPrivateLibvirtd, type PrivateLibvirtd } from '../src/dev/private-libvirtd.js';
import { allText, qemuInfo, sandbox, virsh, type Sandbox } from './helpers.js';

let lv: PrivateLibvirtd;
let sb: Sandbox;
const p = (f: string) => path.join(sb.dir, f);
const PASS = 'Backup-Luks-Pass-5150';
const NEW = 'Backup-Luks-Rotated-6262';
/** the raw disk's own passphrase: never changed here */
const DATA = 'Backup-Luks-Data-7373';

const YAML = `version: 1
images:
  root: { path: $DIR/root.qcow2, size: 16M, encryption: { format: luks, passphraseFile: $DIR/pass, iterTime: 10 } }
  data: { path: $DIR/data.luks, format: raw, size: 8M, encryption: { format: luks, passphraseFile: $DIR/data-pass, iterTime: 10 } }
vms:
  edb:
    create: { memory: 64M, vcpus: 1 }
    disks: [{ image: root }, { image: data }]
backups:
  copy: { vm: edb, schedule: "0 3 * * *", mode: copy, destination: $DIR/bk, verify: true }
  ext: { vm: edb, schedule: "0 4 * * *", mode: external, destination: $DIR/bk-ext, verify: true }
`;

/** qemu-io on an encrypted image with a passphrase (from a file of its own); throws if it fails. */
async function io(pass: string, file: string, driver: 'qcow2' | 'luks', command: string): Promise<void> {
  const key = p(`key-${randomBytes(4).toString('hex')}`);
  await writeFile(key, pass, { mode: 0o600 });
  try {
    const secret = driver === 'qcow2' ? 'encrypt.key-secret' : 'key-secret';
    const r = await execa(
      'qemu-io',
      [
        ...(command.startsWith('read') ? ['-r', '-U'] : []),
        '--object',
        `secret,id=k0,file=${key}`,
        '--image-opts',
        `driver=${driver},${secret}=k0,file.filename=${file}`,
        '-c',
        command,
      ],
      { reject: false },
    );
    if (r.exitCode !== 0 || /fail|error/i.test(String(r.stdout) + String(r.stderr))) throw new Error(`qemu-io ${command} on ${file}: ${r.stdout}${r.stderr}`);
  } finally {
    await rm(key, { force: true });
  }
}
const holds = (pass: string, file: string, driver: 'qcow2' | 'luks', byte: string) =>
  io(pass, file, driver, `read -P ${byte} 1M 1M`).then(
    () => true,
    () => false,
  );
/** A run of the written byte in a file's raw bytes: guest data in clear. */
const clear = async (file: string, byte: number) => (await readFile(file)).includes(Buffer.alloc(4096, byte));

const list = async (name: string) => JSON.parse((await sb.run('backup', 'list', name, '-o', 'json')).stdout) as { id: string; verified?: boolean; present: boolean }[];

beforeAll(async () => {
  lv = await startPrivateLibvirtd();
  sb = await sandbox('encbackups', { libvirt: lv });
  await chmod(sb.dir, 0o755);
  await writeFile(p('pass'), PASS, { mode: 0o600 });
  await writeFile(p('data-pass'), DATA, { mode: 0o600 });
  await sb.yaml(YAML);
  const r = await sb.run('apply');
  if (r.code !== 0) throw new Error(r.stdout + r.stderr);
  await io(PASS, p('root.qcow2'), 'qcow2', 'write -P 0x5a 1M 1M');
  await io(DATA, p('data.luks'), 'luks', 'write -P 0x6b 1M 1M');
});
afterAll(async () => {
  await lv?.stop();
  await sb?.cleanup();
});

describe('backups of encrypted disks', () => {
  it('copy mode, shut off and running: each copy is LUKS with the disk passphrase, verified, and holds no guest data in clear', async () => {
    expect(await clear(p('root.qcow2'), 0x5a)).toBe(false);
    const off = await sb.run('backup', 'run', 'copy');
    expect(off.code, off.stdout + off.stderr).toBe(0);
    expect(off.stdout).toMatch(/\(verified\)/);
    await virsh(lv, 'start', 'edb');
    try {
      const on = await sb.run('backup', 'run', 'copy');
      expect(on.code, on.stdout + on.stderr).toBe(0);
      expect(on.stdout).toMatch(/running\)[\s\S]*\(verified\)/);
    } finally {
      await virsh(lv, 'destroy', 'edb');
    }
    const made = await list('copy');
    expect(made.map((b) => b.verified)).toEqual([true, true]);
    for (const b of made) {
      for (const [t, byte, n] of [
        ['vda', '0x5a', 0x5a],
        ['vdb', '0x6b', 0x6b],
      ] as const) {
        const f = p(`bk/${b.id}-${t}.qcow2`);
        const encrypt = (await qemuInfo(f))['format-specific']?.data?.encrypt;
        expect(encrypt?.format, f).toBe('luks');
        // Its keyslot derived with the disk's iterTime (10 ms), not qemu's 2 s: also the running
        // domain's copy (libvirt formats a target with its own default; reconcile makes them).
        expect(encrypt.slots[0].iters, f).toBeLessThan(2_000_000);
        expect(await holds(t === 'vda' ? PASS : DATA, f, 'qcow2', byte), f).toBe(true);
        expect(await clear(f, n), f).toBe(false);
      }
    }
    expect((await readdir(p('bk'))).filter((f) => f.endsWith('.partial'))).toEqual([]);
  });

  it('external mode on a running domain: the overlay and the copy are encrypted, the domain is left on its own images', async () => {
    await virsh(lv, 'start', 'edb');
    try {
      const r = await sb.run('backup', 'run', 'ext');
      expect(r.code, r.stdout + r.stderr).toBe(0);
      expect(r.stdout).toMatch(/\(verified\)/);
      const blk = await virsh(lv, 'domblklist', 'edb');
      expect(blk).toMatch(/vda\s+\S*root\.qcow2/);
      expect(blk).toMatch(/vdb\s+\S*data\.luks/);
    } finally {
      await virsh(lv, 'destroy', 'edb');
    }
    const [b] = await list('ext');
    for (const t of ['vda', 'vdb']) {
      const f = p(`bk-ext/${b!.id}-${t}.qcow2`);
      expect((await qemuInfo(f))['format-specific']?.data?.encrypt?.format).toBe('luks');
    }
    expect(await holds(PASS, p(`bk-ext/${b!.id}-vda.qcow2`), 'qcow2', '0x5a')).toBe(true);
    expect((await readdir(p('bk-ext'))).filter((f) => f.includes('overlay'))).toEqual([]);
  });

  it('restore writes the copy back encrypted with the disk passphrase: the data is back, the VM starts, the plan is empty', async () => {
    const [b] = await list('copy');
    await io(PASS, p('root.qcow2'), 'qcow2', 'write -P 0x11 1M 1M');
    await io(DATA, p('data.luks'), 'luks', 'write -P 0x22 1M 1M');
    const r = await sb.run('restore', 'copy', '--from', b!.id);
    expect(r.code, r.stdout + r.stderr).toBe(0);
    expect(await holds(PASS, p('root.qcow2'), 'qcow2', '0x5a')).toBe(true);
    expect(await holds(DATA, p('data.luks'), 'luks', '0x6b')).toBe(true);
    expect((await qemuInfo(p('data.luks'))).format).toBe('luks');
    await virsh(lv, 'start', 'edb');
    await virsh(lv, 'destroy', 'edb');
    expect((await sb.run('plan')).stdout).toMatch(/No changes/);
  });

  it('after a passphrase change: an older copy is restored only with the passphrase it was made with (the other disk with its own), and comes back under the new one', async () => {
    await writeFile(p('pass'), NEW, { mode: 0o600 });
    const rekey = await sb.run('apply');
    expect(rekey.code, rekey.stdout + rekey.stderr).toBe(0);
    const [b] = await list('copy');
    await io(NEW, p('root.qcow2'), 'qcow2', 'write -P 0x33 1M 1M');
    const refused = await sb.run('restore', 'copy', '--from', b!.id);
    expect(refused.code).toBe(1);
    expect(refused.stderr).toMatch(
      /opens neither with .*pass \(the disk's passphraseFile: was the passphrase changed after this backup was made\? give the one it was made with: --passphrase-file FILE\); nothing was restored/,
    );
    expect(await holds(NEW, p('root.qcow2'), 'qcow2', '0x33')).toBe(true);
    await writeFile(p('old-pass'), PASS, { mode: 0o600 });
    const r = await sb.run('restore', 'copy', '--from', b!.id, '--passphrase-file', p('old-pass'));
    expect(r.code, r.stdout + r.stderr).toBe(0);
    expect(await holds(NEW, p('root.qcow2'), 'qcow2', '0x5a')).toBe(true);
    expect(await holds(PASS, p('root.qcow2'), 'qcow2', '0x5a')).toBe(false);
    // The raw disk's passphrase never changed: its copy opened with its own (adversarial pass:
    // one --passphrase-file was tried on every disk, so no restore of such a VM could work).
    expect(await holds(DATA, p('data.luks'), 'luks', '0x6b')).toBe(true);
    await virsh(lv, 'start', 'edb');
    await virsh(lv, 'destroy', 'edb');
    // Neither passphrase in the state directory (backup records included) or any output.
    const state = await allText(sb.stateDir);
    for (const w of [PASS, NEW, DATA]) for (const t of [state, r.stdout, r.stderr, refused.stdout, refused.stderr, rekey.stdout]) expect(t).not.toContain(w);
  });
});
