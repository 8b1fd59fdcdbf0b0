// Backups of real domains in a private libvirtd: every mode, retention, hooks (order and
// failure), verify catching a corrupted copy, restore of each kind, overdue reporting.
import { chmod, readFile, readdir } from 'node:fs/promises';
import path from 'node:path';
import { execa } from 'execa';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { startPrivateLibvirtd, type PrivateLibvirtd } from '../src/dev/private-libvirtd.js';
import { damageQcow2, qemuImg, qemuInfo, sandbox, virsh, type Sandbox } from './helpers.js';

let lv: PrivateLibvirtd;
let sb: Sandbox;
const p = (f: string) => path.join(sb.dir, f);
const pattern = async (file: string, byte: string) =>
  !/Pattern verification failed/.test(String((await execa('qemu-io', ['-r', '-U', '-c', `read -P ${byte} 0 1M`, file])).stdout));
const write = (file: string, byte: string) => execa('qemu-io', ['-c', `write -P ${byte} 0 1M`, file]);
const log = (line: string) => ['sh', '-c', `echo ${line} >> $0/hooks.log`, '$DIR'];

beforeAll(async () => {
  lv = await startPrivateLibvirtd();
  sb = await sandbox('backups', { libvirt: lv });
  await chmod(sb.dir, 0o755);
  await sb.yaml(
    `version: 1
images:
  disk: { path: $DIR/disk.qcow2, size: 16M }
vms:
  db:
    create: { memory: 64M, vcpus: 1 }
    disks: [{ image: disk, cache: none }]
backups:
  snap: { vm: db, schedule: "0 2 * * *", mode: snapshot, keep: 2 }
  copy:
    vm: db
    schedule: "0 3 * * *"
    mode: copy
    destination: $DIR/bk
    keep: 2
    verify: true
    hooks:
      pre: [${JSON.stringify(log('pre'))}]
      post: [${JSON.stringify(log('post'))}]
  ext: { vm: db, schedule: "0 4 * * *", mode: external, destination: $DIR/bk-ext, verify: true }
  failing:
    vm: db
    schedule: "0 5 * * *"
    mode: copy
    destination: $DIR/bk-fail
    hooks:
      pre: [["false"]]
      post: [${JSON.stringify(log('post-after-failure'))}]
  quiet: { vm: db, schedule: "0 6 * * *", mode: copy, destination: $DIR/bk-q, quiesce: true }
  aged: { vm: db, schedule: "0 7 * * *", mode: copy, destination: $DIR/bk-aged, maxAge: 1h }
  gfs: { vm: db, schedule: "0 9 * * *", mode: copy, destination: $DIR/bk-gfs, keep: { daily: 1, weekly: 1 } }
  slow:
    vm: db
    schedule: "0 8 * * *"
    mode: copy
    destination: $DIR/bk-slow
    hooks: { pre: [["sleep", "30"]], timeout: 1s }
`.replaceAll('"$DIR"', `"${'$'}DIR"`),
  );
  const r = await sb.run('apply');
  if (r.code !== 0) throw new Error(r.stdout + r.stderr);
  await write(p('disk.qcow2'), '0xa1');
});
afterAll(async () => {
  await lv?.stop();
  await sb?.cleanup();
});

const list = async (name: string) =>
  JSON.parse((await sb.run('backup', 'list', name, '-o', 'json')).stdout) as { id: string; verified?: boolean; present: boolean; size?: number }[];

describe('snapshot mode', () => {
  it('takes internal snapshots named with a UTC timestamp and keeps only the newest `keep`', async () => {
    for (let i = 0; i < 3; i++) expect((await sb.run('backup', 'run', 'snap')).code).toBe(0);
    const snaps = (await virsh(lv, 'snapshot-list', 'db', '--name')).split('\n').filter(Boolean);
    expect(snaps.length).toBe(2);
    for (const s of snaps) expect(s).toMatch(/^snap-\d{8}T\d{9}Z$/);
    expect((await list('snap')).map((b) => b.id)).toEqual(snaps.sort());
  });

  it('restore reverts to the snapshot', async () => {
    const [first] = await list('snap');
    await write(p('disk.qcow2'), '0xb2');
    const r = await sb.run('restore', 'snap', '--from', first!.id);
    expect(r.code).toBe(0);
    expect(await pattern(p('disk.qcow2'), '0xa1')).toBe(true);
  });
});

describe('copy mode', () => {
  it('copies a shut-off domain with qemu-img, verifies it, runs pre then post hooks', async () => {
    const r = await sb.run('backup', 'run', 'copy');
    expect(r.code).toBe(0);
    expect(r.stdout).toMatch(/made copy-\d{8}T\d{9}Z \(verified\)/);
    const [b] = await list('copy');
    expect(b).toMatchObject({ verified: true, present: true });
    const file = p(`bk/${b!.id}-vda.qcow2`);
    await expect(qemuImg('compare', '-U', file, p('disk.qcow2'))).resolves.toMatch(/identical/);
    expect((await readFile(p('hooks.log'), 'utf8')).trim().split('\n')).toEqual(['pre', 'post']);
  });

  it('copies a running domain with backup-begin, and retention keeps two', async () => {
    await virsh(lv, 'start', 'db');
    expect((await sb.run('backup', 'run', 'copy')).code).toBe(0);
    expect((await sb.run('backup', 'run', 'copy')).code).toBe(0);
    const made = await list('copy');
    expect(made.length).toBe(2);
    expect((await readdir(p('bk'))).filter((f) => f.endsWith('.qcow2')).sort()).toEqual(made.map((b) => `${b.id}-vda.qcow2`).sort());
    await expect(qemuImg('compare', '-U', p(`bk/${made[1]!.id}-vda.qcow2`), p('disk.qcow2'))).resolves.toMatch(/identical/);
  });

  it('quiesce without a guest agent fails clearly', async () => {
    const r = await sb.run('backup', 'run', 'quiet');
    expect(r.code).toBe(1);
    expect(r.stderr).toMatch(/quiesce needs the QEMU guest agent running in db/);
    // The copies made for the push backup before the freeze failed are gone.
    expect((await readdir(p('bk-q'))).filter((f) => f.endsWith('.partial'))).toEqual([]);
  });
});

describe('external mode', () => {
  it('snapshots, copies the quiet base and commits back: the domain keeps one image', async () => {
    const r = await sb.run('backup', 'run', 'ext');
    expect(r.stderr).toBe('');
    expect(r.code).toBe(0);
    expect(await virsh(lv, 'domblklist', 'db')).toMatch(new RegExp(`vda\\s+${p('disk.qcow2').replace(/\//g, '\\/')}`));
    expect((await qemuInfo(p('disk.qcow2')))['backing-filename']).toBeUndefined();
    expect((await readdir(p('bk-ext'))).filter((f) => f.startsWith('.'))).toEqual([]);
    const [b] = await list('ext');
    expect(b!.verified).toBe(true);
    await expect(qemuImg('compare', '-U', p(`bk-ext/${b!.id}-vda.qcow2`), p('disk.qcow2'))).resolves.toMatch(/identical/);
    await virsh(lv, 'destroy', 'db');
  });
});

describe('hooks, verify, restore, overdue', () => {
  it('a failing pre hook stops the backup; post hooks still run', async () => {
    const r = await sb.run('backup', 'run', 'failing');
    expect(r.code).toBe(1);
    expect(r.stderr).toMatch(/hook \["false"\] failed/);
    // The failed run is on record, with why (it was missing from backup list: issue 15).
    const runs = JSON.parse((await sb.run('backup', 'list', 'failing', '-o', 'json')).stdout);
    expect(runs).toMatchObject([{ status: 'failed', error: expect.stringMatching(/hook \["false"\] failed/) }]);
    expect((await sb.run('backup', 'list', 'failing')).stdout).toMatch(/FAILED: .*hook \["false"\] failed/);
    expect((await sb.run('restore', 'failing', '--from', runs[0].id)).stderr).toMatch(/failed \(.*\); it holds nothing to restore/);
    expect(await readFile(p('hooks.log'), 'utf8')).toMatch(/post-after-failure/);
  });

  it('a hook that outlives its timeout is stopped and fails the backup', async () => {
    const t0 = Date.now();
    const r = await sb.run('backup', 'run', 'slow');
    expect(r.code).toBe(1);
    expect(r.stderr).toMatch(/hook \["sleep","30"\] timed out after 1s/);
    expect(Date.now() - t0).toBeLessThan(15_000);
  });

  it("keep rules of restic's vocabulary: three copies the same day, daily 1 and weekly 1 keep the newest only", async () => {
    for (let n = 0; n < 3; n++) expect((await sb.run('backup', 'run', 'gfs')).code).toBe(0);
    const made = await list('gfs');
    expect(made.length).toBe(1);
    expect((await readdir(p('bk-gfs'))).filter((f) => f.endsWith('.qcow2'))).toEqual([`${made[0]!.id}-vda.qcow2`]);
  });

  it('a protected backup survives retention; prune --dry-run says what keeps each backup and what would go; prune removes it once unprotected', async () => {
    const [kept] = await list('gfs');
    expect((await sb.run('backup', 'protect', 'gfs', kept!.id)).stdout).toMatch(/protected \(retention never removes it\)/);
    expect((await sb.run('backup', 'run', 'gfs')).code).toBe(0);
    expect((await sb.run('backup', 'run', 'gfs')).code).toBe(0);
    const now = await list('gfs');
    expect(now.map((b) => b.id)).toContain(kept!.id);
    expect(now.length).toBe(2);
    expect((await sb.run('backup', 'list', 'gfs')).stdout).toMatch(new RegExp(`${kept!.id}.* yes +ok$`, 'm'));
    expect((await sb.run('backup', 'unprotect', 'gfs', kept!.id)).code).toBe(0);
    const dry = await sb.run('backup', 'prune', 'gfs', '--dry-run');
    expect(dry.code).toBe(0);
    expect(dry.stdout).toMatch(/keep {4}gfs-\S+ {2}\(newest, daily \d{4}-\d{2}-\d{2}, weekly \d{4}-W\d{2}\)/);
    expect(dry.stdout).toMatch(new RegExp(`remove  ${kept!.id}  \\(no keep rule keeps it\\)`));
    expect(dry.stdout).toMatch(/1 backup\(s\) would be removed, 1 kept \(--dry-run: nothing was changed\)/);
    expect((await list('gfs')).length).toBe(2);
    expect((await sb.run('backup', 'prune', 'gfs')).stdout).toMatch(/1 backup\(s\) removed/);
    expect((await list('gfs')).map((b) => b.id)).not.toContain(kept!.id);
    const bad = await sb.run('backup', 'protect', 'gfs', 'gfs-nosuch');
    expect(bad.code).not.toBe(0);
    expect(bad.stderr).toMatch(/backups\.gfs has no backup gfs-nosuch/);
  });

  it("maxAge retention deletes this schedule's backups older than the limit, never the newest", async () => {
    expect((await sb.run('backup', 'run', 'aged')).code).toBe(0);
    // Age the first backup by two hours in the records, as if it had been made then.
    const file = path.join(sb.stateDir, 'backups.json');
    const records = JSON.parse(await readFile(file, 'utf8'));
    const first = records.runs.find((r: { schedule: string }) => r.schedule === 'aged');
    first.at = new Date(Date.now() - 2 * 3600_000).toISOString();
    await import('node:fs/promises').then((fs) => fs.writeFile(file, JSON.stringify(records)));
    expect((await sb.run('backup', 'run', 'aged')).stdout).toMatch(new RegExp(`retention deleted ${first.id}`));
    const left = await list('aged');
    expect(left.length).toBe(1);
    expect(left[0]!.id).not.toBe(first.id);
    expect((await readdir(p('bk-aged'))).filter((n) => n.endsWith('.qcow2')).length).toBe(1);
  });

  it('verify catches a corrupted copy', async () => {
    const made = await list('copy');
    await damageQcow2(p(`bk/${made[0]!.id}-vda.qcow2`), 'corrupt');
    const r = await sb.run('backup', 'verify', 'copy');
    expect(r.code).toBe(1);
    expect(r.stdout).toMatch(new RegExp(`${made[0]!.id}: FAILED: .*1 corruption`));
    expect((await list('copy')).map((b) => b.verified)).toEqual([false, true]);
  });

  it('restore writes a copy back with the domain shut off and keeps nothing aside once verified', async () => {
    const made = await list('copy');
    await write(p('disk.qcow2'), '0xc3');
    const r = await sb.run('restore', 'copy', '--from', made[1]!.id);
    expect(r.code).toBe(0);
    expect(await pattern(p('disk.qcow2'), '0xa1')).toBe(true);
    expect((await readdir(sb.dir)).filter((f) => f.includes('before-restore') || f.includes('restore-partial'))).toEqual([]);
    expect(await virsh(lv, 'domstate', 'db')).toBe('shut off');
  });

  it('plan reports schedules that never ran and the ones that are overdue', async () => {
    const r = await sb.run('plan');
    // Its run failed: said as such, not as "never run" (issue 15).
    expect(r.stdout).toMatch(/backups\.failing: its last run failed \(\S+\): .*hook \["false"\] failed.* — it has never succeeded/);
    expect(r.stdout).not.toMatch(/backups\.failing has never run/);
    const records = JSON.parse(await readFile(path.join(sb.stateDir, 'backups.json'), 'utf8'));
    records.lastSuccess.snap = '2020-01-01T00:00:00.000Z';
    await import('node:fs/promises').then((fs) => fs.writeFile(path.join(sb.stateDir, 'backups.json'), JSON.stringify(records)));
    expect((await sb.run('plan')).stdout).toMatch(/backups\.snap is overdue: last success 2020-01-01T00:00:00\.000Z, a run was due 2020-01-01T02:00:00\.000Z/);
  });
});
