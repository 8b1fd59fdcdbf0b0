// Incremental backups (libvirt checkpoints, backup-begin with <incremental>) of a real TCG
// domain in a private libvirtd, shut off and running, while its data changes; restore of any
// point of the chain to a new path and, with --vm, of a domain that is gone; retention that
// keeps what a kept backup depends on; a killed run cleaned up; plan-time refusal of modes that
// cannot work; suspension after maxFailures failed runs.
import { chmod, cp, readFile, readdir, rename, stat, writeFile } from 'node:fs/promises';
import path from 'node:path';
import { execa } from 'execa';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { startPrivateLibvirtd, type PrivateLibvirtd } from '../src/dev/private-libvirtd.js';
import { cli, damageQcow2, qemuImg, sandbox, virsh, type Sandbox } from './helpers.js';

let lv: PrivateLibvirtd;
let sb: Sandbox;
const p = (f: string) => path.join(sb.dir, f);
const MiB = 1024 * 1024;

/** Whether the 1 MiB at `mib` MiB of a qcow2 image (read through its backing chain) holds `byte` everywhere. */
const holds = async (file: string, mib: number, byte: number) =>
  !/Pattern verification failed/.test(String((await execa('qemu-io', ['-r', '-U', '-f', 'qcow2', '-c', `read -P ${byte} ${mib}M 1M`, file], { reject: false })).stdout));
/** Written while the domain is shut off: straight into the image. */
const writeOff = (mib: number, byte: number) => execa('qemu-io', ['-f', 'qcow2', '-c', `write -P ${byte} ${mib}M 1M`, p('disk.qcow2')]);
/** Written while it runs: through its QEMU (the guest has no OS to write anything itself). */
const writeRunning = (mib: number, byte: number) =>
  virsh(lv, 'qemu-monitor-command', 'db', '--hmp', `qemu-io -d /machine/peripheral/virtio-disk0/virtio-backend "write -P ${byte} ${mib}M 1M"`);

const YAML = (keep: string, extra = '') => `version: 1
images:
  disk: { path: $DIR/disk.qcow2, size: 16M }
  raw: { path: $DIR/raw.img, size: 8M, format: raw }
  base: { path: $DIR/base.qcow2, size: 16M }
  top: { path: $DIR/top.qcow2, source: { backing: base } }
vms:
  db:
    create: { memory: 64M, vcpus: 1 }
    disks: [{ image: disk, cache: none }, { image: raw }]
  ov: { create: { memory: 64M, vcpus: 1 }, disks: [{ image: top }] }
backups:
  ovcopy: { vm: ov, schedule: "0 4 * * *", mode: copy, destination: $DIR/bk-ov }
  inc: { vm: db, disks: [vda], schedule: "0 1 * * *", mode: incremental, destination: $DIR/bk, keep: ${keep}, verify: true, fullEvery: 4 }
  fails: { vm: db, disks: [vda], schedule: "0 3 * * *", mode: copy, destination: $DIR/bk-f, maxFailures: 2, hooks: { pre: [["test", "-e", "$DIR/hook-ok"]] } }
${extra}`;

interface Run {
  id: string;
  parent?: string;
  note?: string;
  files: { file: string }[];
}
const run = async (): Promise<Run> => {
  const r = await sb.run('backup', 'run', 'inc', '-o', 'json');
  expect(r.code, r.stdout + r.stderr).toBe(0);
  return JSON.parse(r.stdout) as Run;
};
const qemuImgJson = async (f: string) => JSON.parse(await qemuImg('info', '-U', '--output=json', f));
const state = async () => (await virsh(lv, 'domstate', 'db')).trim();
const runs: Run[] = [];

beforeAll(async () => {
  lv = await startPrivateLibvirtd();
  sb = await sandbox('incremental', { libvirt: lv });
  await chmod(sb.dir, 0o755); // the QEMU user opens the images in it
  await sb.yaml(YAML('{ daily: 2 }'));
  const r = await sb.run('apply');
  if (r.code !== 0) throw new Error(r.stdout + r.stderr);
});
afterAll(async () => {
  await lv?.stop();
  await sb?.cleanup();
});

describe('incremental backups', () => {
  it('a shut-off domain: the first run is full, the next copies only what changed; the domain is started paused and left shut off', async () => {
    await writeOff(0, 0xa1);
    runs.push(await run());
    expect(runs[0]!.parent).toBeUndefined();
    expect(await state()).toBe('shut off');
    await writeOff(1, 0xb2);
    await cp(p('disk.qcow2'), p('at-run-2.qcow2'));
    runs.push(await run());
    expect(runs[1]!.parent).toBe(runs[0]!.id);
    expect(await state()).toBe('shut off');
    // A backup holds a disk's data: root's alone (adversarial pass: they were 0644).
    for (const r of runs) expect((await stat(r.files[0]!.file)).mode & 0o777).toBe(0o600);
  });

  it('a running domain: changes written while it runs are in the next increment, and only they', async () => {
    await virsh(lv, 'start', 'db');
    await writeRunning(2, 0xc3);
    runs.push(await run());
    await writeRunning(3, 0xd4);
    runs.push(await run());
    await virsh(lv, 'destroy', 'db');
    expect(runs.map((r) => r.parent)).toEqual([undefined, runs[0]!.id, runs[1]!.id, runs[2]!.id]);
    // The increment holds its 1 MiB of changes; the rest is read through the chain.
    const own = JSON.parse(await qemuImg('map', '--output=json', '-f', 'qcow2', runs[3]!.files[0]!.file)) as { depth: number; data: boolean; length: number }[];
    expect(own.filter((e) => e.depth === 0 && e.data).reduce((n, e) => n + e.length, 0)).toBe(MiB);
    expect((await qemuImg('info', '-U', '--output=json', runs[3]!.files[0]!.file)).includes(path.basename(runs[2]!.files[0]!.file))).toBe(true);
    // Only the newest checkpoint is kept: each is a bitmap every write of the guest updates.
    expect((await virsh(lv, 'checkpoint-list', 'db', '--name')).trim()).toBe(runs[3]!.id);
  });

  it('restore --to writes any point of the chain to a new file, as the disk was then; the VM is not touched', async () => {
    const expected = [
      [0xa1, 0, 0, 0],
      [0xa1, 0xb2, 0, 0],
      [0xa1, 0xb2, 0xc3, 0],
      [0xa1, 0xb2, 0xc3, 0xd4],
    ];
    for (const [i, r] of runs.entries()) {
      const to = p(`point-${i}.qcow2`);
      const out = await sb.run('restore', 'inc', '--from', r.id, '--to', to);
      expect(out.code, out.stdout + out.stderr).toBe(0);
      for (const [mib, byte] of expected[i]!.entries()) expect(await holds(to, mib, byte), `point ${i}, ${mib} MiB`).toBe(true);
      expect(JSON.parse(await qemuImg('info', '--output=json', to))['backing-filename']).toBeUndefined();
    }
    await qemuImg('compare', '-f', 'qcow2', '-F', 'qcow2', p('point-1.qcow2'), p('at-run-2.qcow2'));
    expect(await state()).toBe('shut off');
    const again = await sb.run('restore', 'inc', '--from', runs[1]!.id, '--to', p('point-1.qcow2'));
    expect(again.code).not.toBe(0);
    expect(again.stderr).toMatch(/exists; restore --to never writes over a file/);
    // A path written with a trailing slash is a directory, made if need be.
    expect((await sb.run('restore', 'inc', '--from', runs[1]!.id, '--to', `${p('into')}/`)).code).toBe(0);
    expect(await readdir(p('into'))).toEqual([`${runs[1]!.id}-vda.qcow2`]);
    expect((await stat(p(`into/${runs[1]!.id}-vda.qcow2`))).mode & 0o777).toBe(0o600);
    const both = await sb.run('restore', 'inc', '--from', runs[1]!.id, '--to', p('x.qcow2'), '--vm');
    expect(both.code).toBe(64);
    expect(both.stderr).toMatch(/takes neither --vm nor --start/);
  });

  it('retention keeps every backup a kept one is read through; a new chain starts every fullEvery runs', async () => {
    // Timestamps made older: the chain's first three in the past, its newest today.
    const file = path.join(sb.stateDir, 'backups.json');
    const records = JSON.parse(await readFile(file, 'utf8')) as { runs: { id: string; at: string }[] };
    const day = 86_400_000;
    const ages = [20 * day, 19 * day, day, 1000];
    for (const [i, r] of runs.entries()) records.runs.find((x) => x.id === r.id)!.at = new Date(Date.now() - ages[i]!).toISOString();
    await writeFile(file, JSON.stringify(records));
    const dry = await sb.run('backup', 'prune', 'inc', '--dry-run');
    // Each base names the newest backup read through it.
    expect(dry.stdout).toContain(`keep    ${runs[0]!.id}  (base of ${runs[3]!.id})`);
    expect(dry.stdout).toContain(`keep    ${runs[1]!.id}  (base of ${runs[3]!.id})`);
    expect(dry.stdout).toMatch(new RegExp(`keep    ${runs[2]!.id}  \\(daily \\d{4}-\\d\\d-\\d\\d, base of ${runs[3]!.id}\\)`));
    expect(dry.stdout).toMatch(/0 backup\(s\) would be removed/);
    // fullEvery: 4 — the chain holds four: the fifth run is full, and the old chain may go.
    const fifth = await run();
    expect(fifth.parent).toBeUndefined();
    expect(fifth.note).toMatch(/the chain holds 4 backups \(fullEvery: 4\)/);
    // daily 2 keeps the fifth (today) and the third (yesterday) with the two it is read through;
    // the fourth (today too, older than the fifth) goes.
    const left = JSON.parse((await sb.run('backup', 'list', 'inc', '-o', 'json')).stdout) as { id: string; note?: string; parent?: string }[];
    expect(left.map((x) => x.id).sort()).toEqual([runs[0]!.id, runs[1]!.id, runs[2]!.id, fifth.id].sort());
    expect(left.find((x) => x.id === fifth.id)!.note).toMatch(/fullEvery: 4/);
    expect(left.find((x) => x.id === runs[2]!.id)!.parent).toBe(runs[1]!.id);
    expect((await readdir(p('bk'))).some((n) => n.startsWith(runs[3]!.id))).toBe(false);
    const to = p('after-prune.qcow2');
    expect((await sb.run('restore', 'inc', '--from', runs[2]!.id, '--to', to)).code).toBe(0);
    expect(await holds(to, 2, 0xc3)).toBe(true);
    runs.push(fifth);
  });

  it('restore --vm defines a domain that is gone from the backup, restores its disks as they were then, and the next plan is empty', async () => {
    // A domain with a saved state: its memory would be resumed over the restored disks.
    await virsh(lv, 'start', 'db');
    await virsh(lv, 'managedsave', 'db');
    const saved = await sb.run('restore', 'inc', '--from', runs[2]!.id);
    expect(saved.code).not.toBe(0);
    expect(saved.stderr).toMatch(/has a saved state \(managedsave\).*nothing was restored/);
    await virsh(lv, 'managedsave-remove', 'db');
    await virsh(lv, 'undefine', 'db', '--checkpoints-metadata');
    // Its image gone too: apply makes it as declared, then restore writes into it.
    await rename(p('disk.qcow2'), p('disk.away'));
    const gone = await sb.run('restore', 'inc', '--from', runs[2]!.id, '--vm');
    expect(gone.code).not.toBe(0);
    expect(gone.stderr).toMatch(/disk\.qcow2 \(disk vda\) is gone: `reconcile apply` makes it again/);
    expect(await virsh(lv, 'list', '--all', '--name')).not.toMatch(/\bdb\b/);
    await rename(p('disk.away'), p('disk.qcow2'));
    const r = await sb.run('restore', 'inc', '--from', runs[2]!.id, '--vm', '--start');
    expect(r.code, r.stdout + r.stderr).toBe(0);
    expect(await state()).toBe('running');
    await virsh(lv, 'destroy', 'db');
    for (const [mib, byte] of [0xa1, 0xb2, 0xc3, 0].entries()) expect(await holds(p('disk.qcow2'), mib, byte), `${mib} MiB`).toBe(true);
    const plan = await sb.run('plan');
    expect(plan.stdout).toMatch(/No changes/);
    // Refused while the domain exists: --vm is for a domain that is gone.
    const exists = await sb.run('restore', 'inc', '--from', runs[2]!.id, '--vm');
    expect(exists.code).not.toBe(0);
    expect(exists.stderr).toMatch(/domain db exists/);
    // The disks were written behind the checkpoints' back: the next run is full, and says why.
    const next = await run();
    expect(next.parent).toBeUndefined();
    expect(next.note).toMatch(/db's disks were restored from/);
    // The bitmaps of checkpoints that went with the old definition are gone from the image:
    // only the newest checkpoint's is left (adversarial and newcomer passes: they stayed).
    const bitmaps = ((await qemuImgJson(p('disk.qcow2')))['format-specific'].data.bitmaps ?? []).map((b: { name: string }) => b.name);
    expect(bitmaps).toEqual([next.id]);
  });

  it('a run killed while the domain is started paused for it is cleaned up by the next: the domain stopped, nothing left behind, the run on record as failed', async () => {
    const killed = await cli(
      ['backup', 'run', 'inc', '-f', p('storage.yaml'), '--state-dir', sb.stateDir, '--connect', lv.uri],
      { VIRT_RECONCILE_FAILPOINT: 'backup-copied' },
      lv.nsenter,
    );
    expect(killed.code).not.toBe(0);
    expect(await state()).toBe('paused');
    const r = await sb.run('backup', 'run', 'inc');
    expect(r.code, r.stdout + r.stderr).toBe(0);
    expect(r.stdout).toMatch(/left paused by the interrupted run/);
    expect(await state()).toBe('shut off');
    expect((await readdir(p('bk'))).filter((n) => n.endsWith('.partial'))).toEqual([]);
    const list = JSON.parse((await sb.run('backup', 'list', 'inc', '-o', 'json')).stdout) as { status: string; error?: string }[];
    expect(list.some((x) => x.status === 'failed' && /interrupted/.test(x.error ?? ''))).toBe(true);
  });
});

describe('a damaged chain', () => {
  it('a damaged base fails the verification of every backup read through it; restore refuses them; the next run is full', async () => {
    const base = await run();
    const top = await run();
    expect(top.parent).toBe(base.id);
    await damageQcow2(base.files[0]!.file, 'corrupt');
    const v = await sb.run('backup', 'verify', 'inc');
    expect(v.code, v.stdout + v.stderr).not.toBe(0);
    expect(v.stdout).toMatch(new RegExp(`${top.id}: FAILED: .*${base.id}`));
    const r = await sb.run('restore', 'inc', '--from', top.id, '--to', p('from-damaged.qcow2'));
    expect(r.code).not.toBe(0);
    expect(r.stderr).toMatch(/cannot be restored as it was made: .*nothing was restored/);
    const next = await run();
    expect(next.parent).toBeUndefined();
    expect(next.note).toMatch(/failed verification/);
  });
});

describe('verification', () => {
  it('backup verify --restore restores the newest backup to a scratch path, compares it, and removes it', async () => {
    const r = await sb.run('backup', 'verify', 'inc', '--restore');
    expect(r.code, r.stdout + r.stderr).toBe(0);
    expect(r.stdout).toMatch(/restored to a scratch path and compared: identical/);
    expect((await readdir(p('bk'))).filter((n) => n.startsWith('.verify-restore'))).toEqual([]);
  });

  it('verify.every re-checks at each run the copies last checked longer ago than that; a failure is on record and in plan', async () => {
    await sb.yaml(YAML('{ daily: 2 }').replace('verify: true', 'verify: { after: true, every: 1h }'));
    const file = path.join(sb.stateDir, 'backups.json');
    const records = JSON.parse(await readFile(file, 'utf8')) as { runs: { id: string; at: string; schedule: string; files: { file: string }[]; verifiedAt?: string }[] };
    const old = records.runs.filter((x) => x.schedule === 'inc' && x.files.length).sort((a, b) => a.at.localeCompare(b.at))[0]!;
    old.verifiedAt = new Date(Date.now() - 2 * 3600_000).toISOString();
    await writeFile(file, JSON.stringify(records));
    await damageQcow2(old.files[0]!.file, 'leak');
    const r = await sb.run('backup', 'run', 'inc');
    expect(r.code, r.stdout + r.stderr).toBe(0);
    expect(r.stdout).toContain(`re-verified ${old.id}: FAILED`);
    expect(r.stdout.match(/re-verified/g)).toHaveLength(1);
    expect((await sb.run('plan')).stdout).toContain(`backups.inc: backup ${old.id} FAILED verification`);
    await sb.yaml(YAML('{ daily: 2 }'));
  });
});

describe('restoring an overlay', () => {
  it('is restored as an overlay on its base (only what differs from it), the same file, and the next plan is empty', async () => {
    const top = p('top.qcow2');
    await execa('qemu-io', ['-f', 'qcow2', '-c', 'write -P 0x11 0 1M', p('base.qcow2')]);
    await execa('qemu-io', ['-f', 'qcow2', '-c', 'write -P 0x22 1M 1M', top]);
    const r = await sb.run('backup', 'run', 'ovcopy', '-o', 'json');
    expect(r.code, r.stdout + r.stderr).toBe(0);
    const id = (JSON.parse(r.stdout) as { id: string }).id;
    await execa('qemu-io', ['-f', 'qcow2', '-c', 'write -P 0x33 2M 4M', top]);
    const inode = (await stat(top)).ino;
    const out = await sb.run('restore', 'ovcopy', '--from', id);
    expect(out.code, out.stdout + out.stderr).toBe(0);
    expect(out.stdout).toMatch(/as an overlay on .*base\.qcow2/);
    expect((await stat(top)).ino).toBe(inode);
    expect(await holds(top, 0, 0x11)).toBe(true);
    expect(await holds(top, 1, 0x22)).toBe(true);
    expect(await holds(top, 2, 0)).toBe(true);
    // Only the 1 MiB that differs from the base is in the overlay (written whole it held 16 MiB of data).
    const own = JSON.parse(await qemuImg('map', '--output=json', '-f', 'qcow2', top)) as { depth: number; data: boolean; length: number }[];
    expect(own.filter((e) => e.depth === 0 && e.data).reduce((n, e) => n + e.length, 0)).toBe(1024 * 1024);
    expect((await sb.run('plan')).stdout).toMatch(/No changes/);
  });
});

describe('an interrupted restore', () => {
  it('killed while it wrote into the image: plan says so, and the next backup run puts the image back as it was before', async () => {
    expect(await state()).toBe('shut off');
    await cp(p('disk.qcow2'), p('before-restore.qcow2'));
    const killed = await cli(
      ['restore', 'inc', '--from', runs[0]!.id, '-f', p('storage.yaml'), '--state-dir', sb.stateDir, '--connect', lv.uri],
      { VIRT_RECONCILE_FAILPOINT: 'restore-written' },
      lv.nsenter,
    );
    expect(killed.code, killed.stdout + killed.stderr).toBe(-1);
    // Killed after writing: the image holds the backup's data, not what it had.
    expect(await holds(p('disk.qcow2'), 2, 0)).toBe(true);
    expect((await sb.run('plan')).stdout).toMatch(/the restore of \S+ into db was interrupted: the next `reconcile restore` or `backup run` puts \S+disk\.qcow2 back/);
    const r = await sb.run('backup', 'run', 'inc');
    expect(r.code, r.stdout + r.stderr).toBe(0);
    expect(r.stdout).toMatch(/disk\.qcow2 is back as it was before it/);
    await qemuImg('compare', '-f', 'qcow2', '-F', 'qcow2', p('disk.qcow2'), p('before-restore.qcow2'));
    expect((await readdir(sb.dir)).filter((n) => n.includes('before-restore-'))).toEqual([]);
    expect((await sb.run('plan')).stdout).not.toMatch(/interrupted/);
  });
});

describe('modes that cannot work, and failing schedules', () => {
  it('plan refuses snapshot and incremental modes that cannot work for the disks, naming the disk; backup run changes nothing', async () => {
    const f = await sb.yaml(
      YAML(
        '2',
        `  snap: { vm: db, schedule: "0 2 * * *", mode: snapshot }
  incall: { vm: db, schedule: "0 2 * * *", mode: incremental, destination: $DIR/bk-all }
  snapsome: { vm: db, disks: [vda], schedule: "0 2 * * *", mode: snapshot }
`,
      ),
      'modes.yaml',
    );
    // What the YAML shows is refused by validate already (file:line:col), so by plan too.
    const plan = await sb.run('plan', '-f', f);
    expect(plan.code).not.toBe(0);
    const said = plan.stdout + plan.stderr;
    expect(said).toMatch(
      /modes\.yaml:\d+:\d+: backups\.snap\.mode: mode snapshot cannot include disk vdb of db: it is raw, and internal snapshots need qcow2\. Use mode copy or external\./,
    );
    expect(said).toMatch(/modes\.yaml:\d+:\d+: backups\.incall\.mode: mode incremental cannot back up disk vdb of db: it is raw/);
    expect(said).toMatch(/modes\.yaml:\d+:\d+: backups\.snapsome\.mode: mode snapshot takes every disk of db .* leaves out vdb/);
    expect((await sb.run('validate', '-f', f)).code).not.toBe(0);
    const before = await virsh(lv, 'checkpoint-list', 'db', '--name');
    const r = await sb.run('backup', 'run', 'incall', '-f', f);
    expect(r.code).not.toBe(0);
    expect(r.stderr).toMatch(/cannot back up disk vdb/);
    // A disk the YAML does not declare is found by plan, on the domain as libvirt has it.
    await virsh(lv, 'attach-disk', 'db', p('raw.img'), 'vdz', '--config', '--driver', 'qemu', '--subdriver', 'raw');
    const f2 = await sb.yaml(
      YAML(
        '2',
        '  snaponly: { vm: db, disks: [vda], schedule: "0 2 * * *", mode: incremental, destination: $DIR/bk-x }\n  snapall: { vm: ov, schedule: "0 2 * * *", mode: copy, destination: $DIR/bk-y }\n',
      ),
      'modes2.yaml',
    );
    expect((await sb.run('validate', '-f', f2)).code).toBe(0);
    const incAll = await sb.yaml(YAML('2', '  incz: { vm: db, disks: [vda, vdz], schedule: "0 2 * * *", mode: incremental, destination: $DIR/bk-z }\n'), 'modes3.yaml');
    const p3 = await sb.run('plan', '-f', incAll);
    expect(p3.stdout).toMatch(/backups\.incz: mode incremental cannot back up disk vdz of db: it is raw/);
    await virsh(lv, 'detach-disk', 'db', 'vdz', '--config');
    expect(await virsh(lv, 'checkpoint-list', 'db', '--name')).toBe(before);
    expect((await virsh(lv, 'snapshot-list', 'db', '--name')).trim()).toBe('');
  });

  it('after maxFailures failed runs in a row a schedule is suspended; backup resume or a change to it resumes it', async () => {
    for (let i = 0; i < 2; i++) expect((await sb.run('backup', 'run', 'fails')).code).not.toBe(0);
    expect((await sb.run('plan')).stdout).toMatch(/backups\.fails is SUSPENDED after 2 failed runs in a row/);
    expect((await sb.run('backup', 'resume', 'fails')).stdout).toMatch(/resumed/);
    expect((await sb.run('plan')).stdout).not.toMatch(/SUSPENDED/);
    // Failures counted since the last success: one more is the third in a row, over the limit again.
    expect((await sb.run('backup', 'run', 'fails')).code).not.toBe(0);
    expect((await sb.run('plan')).stdout).toMatch(/backups\.fails is SUSPENDED after 3 failed runs/);
    await sb.yaml(YAML('{ daily: 2 }').replace('maxFailures: 2', 'maxFailures: 5'));
    expect((await sb.run('plan')).stdout).not.toMatch(/SUSPENDED/);
    // Suspended again; a run by hand that succeeds ends it (adversarial pass: it outlived successes).
    await sb.yaml(YAML('{ daily: 2 }'));
    expect((await sb.run('backup', 'run', 'fails')).code).not.toBe(0);
    expect((await sb.run('plan')).stdout).toMatch(/backups\.fails is SUSPENDED/);
    await writeFile(p('hook-ok'), '');
    expect((await sb.run('backup', 'run', 'fails')).code).toBe(0);
    expect((await sb.run('plan')).stdout).not.toMatch(/SUSPENDED/);
  });
});
