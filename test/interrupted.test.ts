// Interrupted work: kill -9 in the middle of a volume import and between the publish of an
// image and its record, Ctrl-C during a conversion, and several applies racing to take over
// the lock of a dead one. Each time the next run must find the truth and converge.
import { spawn, spawnSync } from 'node:child_process';
import { existsSync, statSync } from 'node:fs';
import { mkdir, readdir, readFile, rm, writeFile } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import path from 'node:path';
import { execa } from 'execa';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { startPrivateLibvirtd, type PrivateLibvirtd } from '../src/dev/private-libvirtd.js';
import { CLI, qemuImg, ROOT, sandbox, virsh, waitFor, waitForSpawn, type Sandbox, recorded } from './helpers.js';

const boxes: Sandbox[] = [];
afterAll(async () => {
  for (const b of boxes) await b.cleanup();
});

const tmpEntries = async () => (await readdir(tmpdir())).filter((n) => n.startsWith('virt-reconcile-')).sort();

describe('kill -9 during a volume import', () => {
  let lv: PrivateLibvirtd;
  beforeAll(async () => {
    lv = await startPrivateLibvirtd();
  });
  afterAll(async () => lv?.stop());

  it('the next apply rebuilds the half-written volume and removes the scratch copy', async () => {
    const sb = await sandbox('kill-vol', { libvirt: lv });
    boxes.push(sb);
    await execa('sh', ['-c', `head -c 384M /dev/urandom > '${path.join(sb.dir, 'src.raw')}'`]);
    await sb.yaml(`version: 1
pools:
  vm: { type: dir, path: $DIR/pool }
images:
  imported: { pool: vm, format: qcow2, source: { file: $DIR/src.raw } }
`);
    const before = await tmpEntries();
    for (let trial = 0; trial < 2; trial++) {
      await sb.resetTrace();
      const argv = [...lv.nsenter, 'node', CLI, 'apply', '-f', path.join(sb.dir, 'storage.yaml'), '--state-dir', sb.stateDir, '--connect', lv.uri];
      const child = spawn(argv[0]!, argv.slice(1), { detached: true, stdio: 'ignore', env: { ...process.env, VIRT_RECONCILE_TRACE: sb.trace } });
      // First trial: during the conversion into scratch; second: during the upload.
      const step = trial === 0 ? 'convert' : 'vol-upload';
      await waitForSpawn(sb, step, 60_000);
      await new Promise((r) => setTimeout(r, trial === 0 ? 300 : 50));
      process.kill(-child.pid!, 'SIGKILL');
      await new Promise((r) => child.once('exit', r));
      const show = await sb.run('show', '-o', 'json');
      const img = (JSON.parse(show.stdout) as { images: { name: string; owner: string; status: string }[] }).images.find((i) => i.name === 'imported');
      // Either killed before libvirt made the volume (missing) or after (ours, incomplete): never "adopted, in sync".
      expect(img?.status === 'missing' || (img?.owner === 'created' && img.status === 'drifted'), JSON.stringify(img)).toBe(true);
    }
    const r = await sb.run('apply');
    expect(r.code, r.stdout + r.stderr).toBe(0);
    expect(r.stdout).toMatch(/removed \S+\/scratch\/\d+-\w+, scratch space left by an interrupted apply/);
    const volPath = (await virsh(lv, 'vol-list', 'vm')).trim().split(/\s+/)[1]!;
    await expect(qemuImg('compare', '-F', 'raw', volPath, path.join(sb.dir, 'src.raw'))).resolves.toMatch(/identical/);
    expect(await readdir(path.join(sb.stateDir, 'scratch')).catch(() => [])).toEqual([]);
    expect(await tmpEntries()).toEqual(before);
    const again = await sb.run('plan', '--detailed-exitcode');
    expect(again.code, again.stdout).toBe(0);
    const show = JSON.parse((await sb.run('show', '-o', 'json')).stdout) as { images: { name: string; owner: string }[] };
    expect(show.images.find((i) => i.name === 'imported')?.owner).toBe('created');
  });
});

describe('a crash around the publish of an image', () => {
  it('after the rename, before the record: the image is still ours (in sync, prunable)', async () => {
    const sb = await sandbox('crash-publish');
    boxes.push(sb);
    await sb.yaml(`version: 1
images:
  a: { path: $DIR/a.qcow2, size: 8M, qcow2: { preallocation: metadata } }
`);
    const crashed = await execa('node', [CLI, 'apply', '-f', path.join(sb.dir, 'storage.yaml'), '--state-dir', sb.stateDir], {
      reject: false,
      env: { VIRT_RECONCILE_FAILPOINT: 'image-after-publish' },
    });
    expect(crashed.signal).toBe('SIGKILL');
    expect(existsSync(path.join(sb.dir, 'a.qcow2'))).toBe(true);
    const plan = await sb.run('plan', '--detailed-exitcode');
    expect(plan.code, plan.stdout).toBe(0);
    const show = JSON.parse((await sb.run('show', '-o', 'json')).stdout) as { images: { name: string; owner: string }[] };
    expect(show.images[0]?.owner).toBe('created');
    // Its recorded options came with it: a changed preallocation is a rebuild, not "unknown".
    await sb.yaml(`version: 1
images:
  a: { path: $DIR/a.qcow2, size: 8M, qcow2: { preallocation: falloc } }
`);
    expect((await sb.run('plan')).stdout).toMatch(/qcow2\.preallocation metadata -> falloc/);
    await sb.yaml('version: 1\n');
    const prune = await sb.run('apply', '--prune');
    expect(prune.code, prune.stdout + prune.stderr).toBe(0);
    expect(existsSync(path.join(sb.dir, 'a.qcow2'))).toBe(false);
  });

  it('before the rename: nothing under the declared name; the next apply builds it and removes the leftovers', async () => {
    const sb = await sandbox('crash-prepublish');
    boxes.push(sb);
    await sb.yaml(`version: 1
images:
  b: { path: $DIR/b.raw, format: raw, size: 4M }
`);
    const crashed = await execa('node', [CLI, 'apply', '-f', path.join(sb.dir, 'storage.yaml'), '--state-dir', sb.stateDir], {
      reject: false,
      env: { VIRT_RECONCILE_FAILPOINT: 'image-before-publish' },
    });
    expect(crashed.signal).toBe('SIGKILL');
    expect(existsSync(path.join(sb.dir, 'b.raw'))).toBe(false);
    const r = await sb.run('apply');
    expect(r.code, r.stdout + r.stderr).toBe(0);
    expect(r.stdout).toMatch(/1 created/);
    expect((await readdir(sb.dir)).filter((n) => n.includes('.reconcile-'))).toEqual([]);
    const show = JSON.parse((await sb.run('show', '-o', 'json')).stdout) as { images: { name: string; owner: string; status: string }[] };
    expect(show.images[0]).toMatchObject({ owner: 'created', status: 'in-sync' });
  });
});

describe('leftovers of a killed build beside an image that was made anyway', () => {
  it('are removed by the next apply, even one with nothing to change; a look-alike holding a file of someone else stays (adversarial pass)', async () => {
    const sb = await sandbox('tidy');
    boxes.push(sb);
    await sb.yaml('version: 1\nimages:\n  t: { path: $DIR/t.qcow2, size: 1M }\n');
    expect((await sb.run('apply')).code).toBe(0);
    const img = path.join(sb.dir, 't.qcow2');
    // Killed after the link that published it, before its build directory went: a second link.
    const linked = path.join(sb.dir, '.t.qcow2.reconcile-99999999-abcdef12');
    await mkdir(linked);
    await writeFile(path.join(linked, '.virt-reconcile-build'), '99999999\n');
    await execa('ln', [img, path.join(linked, 't.qcow2')]);
    // Killed between making a build directory and marking it: empty.
    const empty = path.join(sb.dir, '.t.qcow2.reconcile-99999998-abcdef13');
    await mkdir(empty);
    // Named like one, but not ours: it holds a file and no marker.
    const theirs = path.join(sb.dir, '.t.qcow2.reconcile-99999997-abcdef14');
    await mkdir(theirs);
    await writeFile(path.join(theirs, 'keep'), 'mine');
    expect(statSync(img).nlink).toBe(2);
    const r = await sb.run('apply');
    expect(r.code, r.stdout + r.stderr).toBe(0);
    expect(r.stdout).toMatch(/No changes/);
    expect(r.stdout).toMatch(/removed .*abcdef12, left by an interrupted apply/);
    expect(existsSync(linked)).toBe(false);
    expect(existsSync(empty)).toBe(false);
    expect(await readFile(path.join(theirs, 'keep'), 'utf8')).toBe('mine');
    expect(statSync(img).nlink).toBe(1);
  });
});

describe('destroy after a crash in the middle of a publish', () => {
  it('removes the extents a killed build renamed in and its build directory; a later apply builds again', async () => {
    const sb = await sandbox('crash-destroy');
    boxes.push(sb);
    await sb.yaml('version: 1\nimages:\n  vm: { path: $DIR/vm.vmdk, format: vmdk, size: 8M, vmdk: { subformat: twoGbMaxExtentFlat } }\n');
    const crashed = await execa('node', [CLI, 'apply', '-f', path.join(sb.dir, 'storage.yaml'), '--state-dir', sb.stateDir], {
      reject: false,
      env: { VIRT_RECONCILE_FAILPOINT: 'image-extents-published' },
    });
    expect(crashed.signal).toBe('SIGKILL');
    expect(existsSync(path.join(sb.dir, 'vm-f001.vmdk'))).toBe(true);
    expect(existsSync(path.join(sb.dir, 'vm.vmdk'))).toBe(false);
    const destroyed = await sb.run('destroy');
    expect(destroyed.code, destroyed.stdout + destroyed.stderr).toBe(0);
    expect((await readdir(sb.dir)).filter((n) => n.startsWith('vm') || n.includes('.reconcile-'))).toEqual([]);
    const again = await sb.run('apply');
    expect(again.code, again.stdout + again.stderr).toBe(0);
    expect(existsSync(path.join(sb.dir, 'vm.vmdk'))).toBe(true);
  });
});

describe('Ctrl-C during apply', () => {
  it('cancels the conversion in flight (no orphaned qemu-img, no temp files), starts nothing more, releases the lock and says what was done', async () => {
    const sb = await sandbox('sigint');
    boxes.push(sb);
    await execa('sh', ['-c', `head -c 512M /dev/urandom > '${path.join(sb.dir, 'src.raw')}'`]);
    await sb.yaml(`version: 1
images:
  small: { path: $DIR/small.qcow2, size: 1M }
  big: { path: $DIR/big.qcow2, source: { file: $DIR/src.raw }, qcow2: { compressed: true } }
  after: { path: $DIR/after.qcow2, source: { image: big } }
  other: { path: $DIR/other.qcow2, size: 1M }
`);
    const apply = sb.start('apply', '--parallelism', '1');
    await waitForSpawn(sb, 'convert');
    await new Promise((r) => setTimeout(r, 200));
    apply.child.kill('SIGINT'); // the node process only, as `kill -INT PID` would
    const code = await apply.exited;
    const out = apply.stdout() + apply.stderr();
    expect(code, out).toBe(130);
    expect(out).toMatch(/images\.big: cancelled/);
    expect(out).toMatch(/Apply interrupted by SIGINT/);
    expect(out).toMatch(/cancelled in flight \(built again by the next apply\): images\.big/);
    expect(out).toMatch(/not started: .*images\.after/);
    const qemu = spawnSync('pgrep', ['-f', `qemu-img convert.*${sb.dir}`]);
    expect(String(qemu.stdout).trim(), 'a qemu-img left running').toBe('');
    expect((await readdir(sb.dir)).filter((n) => n.includes('.reconcile-'))).toEqual([]);
    expect(existsSync(path.join(sb.dir, 'big.qcow2'))).toBe(false);
    expect(existsSync(path.join(sb.stateDir, 'apply.lock'))).toBe(false);
    const r = await sb.run('apply', '--lock-timeout', '0');
    expect(r.code, r.stdout + r.stderr).toBe(0);
    await expect(qemuImg('compare', '-F', 'raw', path.join(sb.dir, 'big.qcow2'), path.join(sb.dir, 'src.raw'))).resolves.toMatch(/identical/);
  });
});

describe('lock takeover', () => {
  it('of a dead holder is won by exactly one of several applies started at once (repeated)', async () => {
    const sb = await sandbox('lock-race');
    boxes.push(sb);
    const log = path.join(sb.dir, 'critical.log');
    const script = `
      import { appendFileSync } from 'node:fs';
      import { acquireLock } from ${JSON.stringify(path.join(ROOT, 'dist', 'reconcile', 'lock.js'))};
      // All start together: the race is between waiters that see the dead holder at once.
      await new Promise((r) => setTimeout(r, Number(process.argv[3]) - Date.now()));
      const lock = await acquireLock(process.argv[1], { timeoutSeconds: 60, command: 'race', log: () => {} });
      appendFileSync(process.argv[2], 'in ' + process.pid + '\\n');
      await new Promise((r) => setTimeout(r, 150));
      appendFileSync(process.argv[2], 'out ' + process.pid + '\\n');
      await lock.release();
    `;
    for (let round = 0; round < 5; round++) {
      const stateDir = path.join(sb.dir, `state${round}`);
      await mkdir(path.join(stateDir, 'apply.lock'), { recursive: true });
      const deadPid = spawnSync('true').pid;
      const bootId = (await readFile('/proc/sys/kernel/random/boot_id', 'utf8')).trim();
      await writeFile(
        path.join(stateDir, 'apply.lock', 'holder.json'),
        JSON.stringify({ pid: deadPid, host: (await execa('hostname')).stdout.trim(), boot: bootId, command: 'apply', since: new Date().toISOString() }),
      );
      await writeFile(log, '');
      const at = String(Date.now() + 1500);
      const runs = await Promise.all(Array.from({ length: 5 }, () => execa('node', ['--input-type=module', '-e', script, stateDir, log, at], { reject: false })));
      for (const r of runs) expect(r.exitCode, r.stderr).toBe(0);
      const lines = (await readFile(log, 'utf8')).trim().split('\n');
      expect(lines).toHaveLength(10);
      // Strictly alternating in/out: never two holders at once.
      for (let i = 0; i < lines.length; i += 2) {
        expect(lines[i]).toMatch(/^in /);
        expect(lines[i + 1]).toBe(lines[i]!.replace('in', 'out'));
      }
    }
  });
});

describe('kill -9 between a libvirt define and its record', () => {
  let lv: PrivateLibvirtd;
  beforeAll(async () => {
    lv = await startPrivateLibvirtd();
  });
  afterAll(async () => lv?.stop());

  // Inside the daemon's mount namespace, as sb.run runs the CLI; the process kills itself at the point.
  const crash = (sb: Sandbox, point: string) =>
    execa(lv.nsenter[0]!, [...lv.nsenter.slice(1), 'node', CLI, 'apply', '-f', path.join(sb.dir, 'storage.yaml'), '--state-dir', sb.stateDir, '--connect', lv.uri], {
      reject: false,
      env: { VIRT_RECONCILE_FAILPOINT: point },
    });

  it('a pool: recorded first with the uuid reconcile chose for it, so the next apply knows it as its own and prune removes it; one defined by someone else under the name is never taken', async () => {
    const sb = await sandbox('kill-pool', { libvirt: lv });
    boxes.push(sb);
    await sb.yaml('version: 1\npools:\n  killed: { type: dir, path: $DIR/pool }\n');
    expect((await crash(sb, 'pool-defined')).signal).toBe('SIGKILL');
    const pool = (await recorded(sb.stateDir))['pool:killed'];
    expect(pool).toMatchObject({ status: 'building' });
    expect((await virsh(lv, 'pool-uuid', 'killed')).trim()).toBe(pool.uuid);
    const again = await sb.run('apply');
    expect(again.code, again.stderr).toBe(0);
    expect(again.stdout).not.toMatch(/killed while defining/);
    await sb.yaml('version: 1\n');
    const pruned = await sb.run('apply', '--prune');
    expect(pruned.code, pruned.stderr).toBe(0);
    expect(pruned.stdout).toMatch(/inventory:pool:killed: deleting \(pool killed left the YAML/);
    expect(await virsh(lv, 'pool-list', '--all', '--name')).not.toMatch(/killed/);

    // Killed again, and someone defines their own pool under the name before the next run.
    await sb.yaml('version: 1\npools:\n  killed: { type: dir, path: $DIR/pool }\n');
    expect((await crash(sb, 'pool-defined')).signal).toBe('SIGKILL');
    // (A dir pool is defined, built and started by one process: it may be running.)
    await virsh(lv, 'pool-destroy', 'killed').catch(() => undefined);
    await virsh(lv, 'pool-undefine', 'killed');
    await virsh(lv, 'pool-define-as', 'killed', 'dir', '--target', path.join(sb.dir, 'theirs'));
    await sb.yaml('version: 1\n');
    const forgot = await sb.run('apply', '--prune');
    expect(forgot.code, forgot.stderr).toBe(0);
    expect(forgot.stdout).toMatch(
      /inventory:pool:killed: deleting \(an apply was killed while defining it, and this pool is not the one it was making \(another uuid\): forgotten, not deleted\)/,
    );
    expect(await virsh(lv, 'pool-list', '--all', '--name')).toMatch(/killed/);
    expect(await recorded(sb.stateDir)).toEqual({});
    await virsh(lv, 'pool-undefine', 'killed');
  });

  it('a volume: killed after vol-create made it, before its key was recorded: the file born right after the intent is the half-made volume, rebuilt and then prunable', async () => {
    const sb = await sandbox('kill-blank', { libvirt: lv });
    boxes.push(sb);
    await sb.yaml('version: 1\npools:\n  kb: { type: dir, path: $DIR/pool }\nimages:\n  bv: { pool: kb, size: 10M }\n');
    expect((await crash(sb, 'volume-made')).signal).toBe('SIGKILL');
    expect((await recorded(sb.stateDir))['volume:kb/bv.qcow2']).toMatchObject({ status: 'building', key: '' });
    const again = await sb.run('apply');
    expect(again.code, again.stdout + again.stderr).toBe(0);
    expect(again.stdout).toMatch(/images\.bv: replacing \(state incomplete \(an apply was interrupted\) -> complete\)/);
    const destroyed = await sb.run('destroy');
    expect(destroyed.code, destroyed.stdout + destroyed.stderr).toBe(0);
    expect(await virsh(lv, 'pool-list', '--all', '--name')).not.toMatch(/\bkb\b/);
  });

  it('a group of blank volumes: killed after the first was made and recorded, the next apply finishes the group; every volume ends ours and prunable', async () => {
    const sb = await sandbox('kill-group', { libvirt: lv });
    boxes.push(sb);
    const vols = Array.from({ length: 6 }, (_, i) => `  g${i}: { pool: kg, format: raw, size: 1M }`).join('\n');
    await sb.yaml(`version: 1\npools:\n  kg: { type: dir, path: $DIR/pool }\nimages:\n${vols}\n`);
    // --parallelism 1: the six go as one group, one virsh process.
    const killed = await execa(
      lv.nsenter[0]!,
      [...lv.nsenter.slice(1), 'node', CLI, 'apply', '--parallelism', '1', '-f', path.join(sb.dir, 'storage.yaml'), '--state-dir', sb.stateDir, '--connect', lv.uri],
      {
        reject: false,
        env: { VIRT_RECONCILE_FAILPOINT: 'volume-group-step' },
      },
    );
    expect(killed.signal).toBe('SIGKILL');
    const inv = await recorded(sb.stateDir);
    // The volume made first is recorded with its path while the group is still running.
    const made = Object.values(inv).filter((r) => (r as { type: string; key?: string }).type === 'volume' && (r as { key: string }).key !== '');
    expect(made.length).toBeGreaterThan(0);
    for (const r of made) expect(r).toMatchObject({ status: 'building' });
    // virsh may have gone on making a few more after the kill; whatever exists is ours.
    await virsh(lv, 'pool-refresh', 'kg');
    const again = await sb.run('apply');
    expect(again.code, again.stdout + again.stderr).toBe(0);
    expect(again.stdout + again.stderr).not.toMatch(/reconcile did not create it/);
    expect((await sb.run('plan')).stdout).toMatch(/No changes/);
    const after = await recorded(sb.stateDir);
    for (let i = 0; i < 6; i++) expect(after[`volume:kg/g${i}.img`]).toMatchObject({ status: 'ready', key: path.join(sb.dir, 'pool', `g${i}.img`) });
    await sb.yaml('version: 1\n');
    const pruned = await sb.run('apply', '--prune');
    expect(pruned.code, pruned.stdout + pruned.stderr).toBe(0);
    expect(await virsh(lv, 'pool-list', '--all', '--name')).not.toMatch(/\bkg\b/);
  });

  const crashAt = (sb: Sandbox, point: string, ...extra: string[]) =>
    execa(lv.nsenter[0]!, [...lv.nsenter.slice(1), 'node', CLI, 'apply', ...extra, '-f', path.join(sb.dir, 'storage.yaml'), '--state-dir', sb.stateDir, '--connect', lv.uri], {
      reject: false,
      env: { VIRT_RECONCILE_FAILPOINT: point },
    });

  it('a group killed early: a volume someone else makes meanwhile under a later name of the group is never taken (adversarial pass)', async () => {
    const sb = await sandbox('kill-group-foreign', { libvirt: lv });
    boxes.push(sb);
    const vols = Array.from({ length: 6 }, (_, i) => `  f${i}: { pool: kf, format: raw, size: 1M }`).join('\n');
    await sb.yaml(`version: 1\npools:\n  kf: { type: dir, path: $DIR/pool }\nimages:\n${vols}\n`);
    expect((await crashAt(sb, 'volume-group-step', '--parallelism', '1')).signal).toBe('SIGKILL');
    // Only what was under way is recorded: nothing for the names the group had not reached.
    const inv = await recorded(sb.stateDir);
    expect(inv['volume:kf/f5.img']).toBeUndefined();
    await virsh(lv, 'vol-create-as', 'kf', 'f5.img', '1M', '--format', 'raw');
    const theirs = path.join(sb.dir, 'pool', 'f5.img');
    await writeFile(theirs, 'THEIRS');
    const ino = statSync(theirs).ino;
    const r = await sb.run('apply');
    expect(r.code).toBe(1);
    expect(r.stdout + r.stderr).toMatch(/volume f5\.img in pool kf exists and reconcile did not create it/);
    expect(await readFile(theirs, 'utf8')).toBe('THEIRS');
    expect(statSync(theirs).ino).toBe(ino);
    await virsh(lv, 'vol-delete', '--pool', 'kf', 'f5.img');
    expect((await sb.run('apply')).code).toBe(0);
    await sb.yaml('version: 1\n');
    expect((await sb.run('apply', '--prune')).code).toBe(0);
  });

  it("a file of someone's at a group volume's path (libvirt not told): that create fails, and no apply after it, even one killed right after, takes the file (adversarial pass)", async () => {
    const sb = await sandbox('kill-group-file', { libvirt: lv });
    boxes.push(sb);
    await sb.yaml('version: 1\npools:\n  ku: { type: dir, path: $DIR/pool }\n');
    expect((await sb.run('apply')).code).toBe(0);
    const precious = path.join(sb.dir, 'pool', 'u0.img');
    await writeFile(precious, 'PRECIOUS');
    const ino = statSync(precious).ino;
    const vols = Array.from({ length: 4 }, (_, i) => `  u${i}: { pool: ku, format: raw, size: 1M }`).join('\n');
    await sb.yaml(`version: 1\npools:\n  ku: { type: dir, path: $DIR/pool }\nimages:\n${vols}\n`);
    // Killed right after the first create (the one on the file) failed and the next intent was saved.
    expect((await crashAt(sb, 'volume-group-step', '--parallelism', '1')).signal).toBe('SIGKILL');
    expect((await recorded(sb.stateDir))['volume:ku/u0.img']).toBeUndefined();
    for (const refresh of [false, true]) {
      if (refresh) await virsh(lv, 'pool-refresh', 'ku');
      const r = await sb.run('apply');
      expect(r.code).toBe(1);
      expect(await readFile(precious, 'utf8')).toBe('PRECIOUS');
      expect(statSync(precious).ino).toBe(ino);
    }
    await rm(precious);
    await virsh(lv, 'pool-refresh', 'ku');
    expect((await sb.run('apply')).code).toBe(0);
    await sb.yaml('version: 1\n');
    expect((await sb.run('apply', '--prune')).code).toBe(0);
  });

  it('a volume whose rebuild is killed too (a second kill) is still recognised and rebuilt (adversarial pass)', async () => {
    const sb = await sandbox('kill-twice', { libvirt: lv });
    boxes.push(sb);
    await sb.yaml('version: 1\npools:\n  kt: { type: dir, path: $DIR/pool }\nimages:\n  data: { pool: kt, size: 1M }\n');
    expect((await sb.run('apply')).code).toBe(0);
    await virsh(lv, 'vol-delete', '--pool', 'kt', 'data.qcow2');
    expect((await crashAt(sb, 'volume-made')).signal).toBe('SIGKILL');
    expect((await crashAt(sb, 'volume-made')).signal).toBe('SIGKILL');
    expect((await recorded(sb.stateDir))['volume:kt/data.qcow2']).toMatchObject({
      status: 'building',
      path: path.join(sb.dir, 'pool', 'data.qcow2'),
    });
    const r = await sb.run('apply');
    expect(r.code, r.stdout + r.stderr).toBe(0);
    expect((await sb.run('plan')).stdout).toMatch(/No changes/);
    await sb.yaml('version: 1\n');
    expect((await sb.run('apply', '--prune')).code).toBe(0);
  });

  it('Ctrl-C at the terminal (SIGINT to the whole process group) in the middle of a volume group: what was made is reported made, the rest not started — none FAILED — and the next apply finishes (adversarial pass)', async () => {
    const sb = await sandbox('ctrl-c-group', { libvirt: lv });
    boxes.push(sb);
    const vols = Array.from({ length: 64 }, (_, i) => `  c${i}: { pool: kc, format: qcow2, size: 1G }`).join('\n');
    await sb.yaml(`version: 1\npools:\n  kc: { type: dir, path: $DIR/pool }\nimages:\n${vols}\n`);
    await sb.resetTrace();
    const apply = sb.start('apply', '--parallelism', '1');
    await waitForSpawn(sb, '(32 steps on its input: vol-create)', 30_000);
    await new Promise((r) => setTimeout(r, 60));
    apply.interrupt();
    const code = await apply.exited;
    const out = apply.stdout() + apply.stderr();
    expect(code, out).toBe(130);
    expect(out).not.toMatch(/FAILED|@@/);
    expect(out).toMatch(/cancelled \(shutting down\)/);
    const again = await sb.run('apply');
    expect(again.code, again.stdout + again.stderr).toBe(0);
    expect((await sb.run('plan')).stdout).toMatch(/No changes/);
    await sb.yaml('version: 1\n');
    expect((await sb.run('apply', '--prune')).code).toBe(0);
  });

  it('Ctrl-C at the terminal during a prune: the deletes in flight finish (their virsh is not hit by the signal), none FAILED, and the next prune ends it', async () => {
    const sb = await sandbox('ctrl-c-prune', { libvirt: lv });
    boxes.push(sb);
    const vols = Array.from({ length: 40 }, (_, i) => `  d${i}: { pool: kd, format: raw, size: 1M }`).join('\n');
    await sb.yaml(`version: 1\npools:\n  kd: { type: dir, path: $DIR/pool }\nimages:\n${vols}\n`);
    expect((await sb.run('apply')).code).toBe(0);
    await sb.yaml('version: 1\n');
    await sb.resetTrace();
    const prune = sb.start('apply', '--prune');
    await waitFor(async () => (await sb.spawned()).some((a) => a.includes('vol-delete')), 'a vol-delete', 30_000);
    prune.interrupt();
    const code = await prune.exited;
    const out = prune.stdout() + prune.stderr();
    expect(code, out).toBe(130);
    expect(out).not.toMatch(/FAILED/);
    const again = await sb.run('apply', '--prune');
    expect(again.code, again.stdout + again.stderr).toBe(0);
    expect(await virsh(lv, 'pool-list', '--all', '--name')).not.toMatch(/\bkd\b/);
  });

  it('a domain: the uuid recorded first proves it was being made, so the next apply finishes its record and prune can undefine it', async () => {
    const sb = await sandbox('kill-dom', { libvirt: lv });
    boxes.push(sb);
    await sb.yaml('version: 1\nimages:\n  root: { path: $DIR/root.qcow2, size: 16M }\nvms:\n  killed-dom:\n    create: { memory: 128M, vcpus: 1 }\n    disks: [{ image: root }]\n');
    expect((await crash(sb, 'domain-defined')).signal).toBe('SIGKILL');
    const inv = await recorded(sb.stateDir);
    expect(inv['domain:killed-dom']).toMatchObject({ status: 'building' });
    expect((await virsh(lv, 'domuuid', 'killed-dom')).trim()).toBe(inv['domain:killed-dom'].uuid);
    const plan = await sb.run('plan');
    expect(plan.stdout).toMatch(/~ vms\.killed-dom\s+update\s+state incomplete \(an apply was interrupted\) -> complete/);
    expect((await sb.run('apply')).code).toBe(0);
    const uuid = (await virsh(lv, 'domuuid', 'killed-dom')).trim();
    expect((await recorded(sb.stateDir))['domain:killed-dom']).toMatchObject({ status: 'ready', uuid });
    await sb.yaml('version: 1\nimages:\n  root: { path: $DIR/root.qcow2, size: 16M }\n');
    const pruned = await sb.run('apply', '--prune');
    expect(pruned.code, pruned.stderr).toBe(0);
    expect(await virsh(lv, 'list', '--all', '--name')).not.toMatch(/killed-dom/);
  });
});
