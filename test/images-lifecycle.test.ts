// Grow, shrink refusal, replace guard, protect, prune ownership, permission drift, saved plans,
// exit codes, the apply lock and crash safety — all asserted on what qemu-img and the filesystem report.
import { spawn } from 'node:child_process';
import { existsSync, statSync } from 'node:fs';
import { chmod, mkdir, readdir, readFile, rm, writeFile } from 'node:fs/promises';
import { hostname } from 'node:os';
import path from 'node:path';
import { execa } from 'execa';
import { afterEach, describe, expect, it, onTestFinished } from 'vitest';
import { startPrivateLibvirtd } from '../src/dev/private-libvirtd.js';
import { CLI, qemuImg, qemuInfo, sandbox, waitFor, waitForSpawn, writers, type Sandbox, recorded } from './helpers.js';

const MiB = 1024 * 1024;
let sb: Sandbox;
afterEach(() => sb?.cleanup());
const p = (f: string) => path.join(sb.dir, f);
const one = (name: string, body: string) => `version: 1\nimages:\n  ${name}: ${body}\n`;

describe('blank images are created together', () => {
  it('40 blank images: their qemu-img runs go through a few shell processes, not 80 spawns; each recorded and verified', async () => {
    sb = await sandbox('many');
    const fmts = ['qcow2', 'raw', 'vhdx', 'vmdk', 'vhd'];
    await sb.yaml(
      `version: 1\nimages:\n${Array.from({ length: 40 }, (_, i) => `  m${i}: { path: $DIR/m/${i}.${fmts[i % 5]}, format: ${fmts[i % 5]}, size: ${1 + (i % 3)}M }`).join('\n')}\n`,
    );
    await sb.resetTrace();
    const r = await sb.run('apply');
    expect(r.code, r.stdout + r.stderr).toBe(0);
    const spawned = await sb.spawned();
    const shells = spawned.filter((a) => a[0] === 'sh');
    // Every qemu-img run is traced, and so is each shell that ran a group of them ("(N commands)").
    const inShells = shells.reduce((n, a) => n + Number(/\((\d+) commands\)/.exec(a[2]!)![1]), 0);
    expect(inShells).toBe(80);
    // creates: four groups of 10 (as many as --parallelism 4 runs at once); reads: each group's 10 files in shells of 8 and 2
    expect(shells.length).toBeGreaterThan(0);
    expect(shells.length).toBeLessThanOrEqual(12);
    expect(spawned.length - inShells - shells.length).toBe(0);
    expect(spawned.filter((a) => a[0] === 'qemu-img' && a[1] === 'create')).toHaveLength(40);
    const inv = await recorded(sb.stateDir);
    for (let i = 0; i < 40; i++) {
      const f = p(`m/${i}.${fmts[i % 5]}`);
      expect(inv[`image:${f}`]).toMatchObject({ ino: statSync(f).ino });
      expect(statSync(f).mode & 0o777).toBe(0o600);
    }
    expect(await readdir(p('m'))).toHaveLength(40);
    expect((await sb.run('plan')).stdout).toMatch(/No changes/);
  });

  it('one image that cannot be built fails alone; the others of its group are made', async () => {
    sb = await sandbox('many-fail');
    await mkdir(p('locked'));
    await execa('chattr', ['+i', p('locked')]);
    try {
      await sb.yaml('version: 1\nimages:\n  a: { path: $DIR/a.qcow2, size: 1M }\n  b: { path: $DIR/locked/b.qcow2, size: 1M }\n  c: { path: $DIR/c.raw, format: raw, size: 1M }\n');
      const r = await sb.run('apply');
      expect(r.code).toBe(1);
      expect(r.stdout).toMatch(/images\.b: FAILED: .*operation not permitted/);
      expect(r.stdout).toMatch(/2 created/);
      const inv = await recorded(sb.stateDir);
      expect(Object.keys(inv).sort()).toEqual([`image:${p('a.qcow2')}`, `image:${p('c.raw')}`]);
    } finally {
      await execa('chattr', ['-i', p('locked')]);
    }
  });
});

describe('size', () => {
  it('grows qcow2 and raw in place, keeping inode and data', async () => {
    sb = await sandbox('grow');
    await sb.yaml(`version: 1\nimages:\n  q: { path: $DIR/q.qcow2, size: 8M }\n  r: { path: $DIR/r.img, format: raw, size: 8M }\n`);
    expect((await sb.run('apply')).code).toBe(0);
    await execa('qemu-io', ['-f', 'qcow2', '-c', 'write -P 0x33 0 1M', p('q.qcow2')]);
    const ino = statSync(p('q.qcow2')).ino;
    await sb.yaml(`version: 1\nimages:\n  q: { path: $DIR/q.qcow2, size: 20M }\n  r: { path: $DIR/r.img, format: raw, size: 1G }\n`);
    const plan = await sb.run('plan', '--detailed-exitcode');
    expect(plan.code).toBe(2);
    expect(plan.stdout).toMatch(/~ images\.q\s+update\s+size 8 MiB -> 20 MiB/);
    expect(plan.stdout).toMatch(/~ images\.r\s+update\s+size 8 MiB -> 1 GiB/);
    const r = await sb.run('apply');
    expect(r.stdout).toMatch(/Apply complete: 0 created, 2 updated, 0 replaced, 0 deleted\./);
    expect((await qemuInfo(p('q.qcow2')))['virtual-size']).toBe(20 * MiB);
    expect((await qemuInfo(p('r.img')))['virtual-size']).toBe(1024 * MiB);
    expect(statSync(p('q.qcow2')).ino).toBe(ino);
    const read = await execa('qemu-io', ['-f', 'qcow2', '-c', 'read -P 0x33 0 1M', p('q.qcow2')]);
    expect(read.stdout).not.toMatch(/Pattern verification failed/);
  });

  it('refuses to shrink, says why, and leaves the image alone', async () => {
    sb = await sandbox('shrink');
    await sb.yaml(one('q', '{ path: $DIR/q.qcow2, size: 20M }'));
    await sb.run('apply');
    await sb.yaml(one('q', '{ path: $DIR/q.qcow2, size: 10M }'));
    for (const verb of ['plan', 'apply']) {
      const r = await sb.run(verb, '--allow-replace');
      expect(r.code).toBe(1);
      expect(r.stdout + r.stderr).toMatch(/Plan refused: 1 change\(s\) cannot be made/);
      expect(r.stdout + r.stderr).toMatch(/storage\.yaml:3:\d+: size 10 MiB is smaller than the image at .*q\.qcow2 \(20 MiB\); shrinking an image destroys data and is refused/);
    }
    expect((await qemuInfo(p('q.qcow2')))['virtual-size']).toBe(20 * MiB);
  });

  it('formats that cannot grow in place need --allow-replace', async () => {
    sb = await sandbox('grow-vhdx');
    await sb.yaml(one('x', '{ path: $DIR/x.vhdx, format: vhdx, size: 8M }'));
    await sb.run('apply');
    await sb.yaml(one('x', '{ path: $DIR/x.vhdx, format: vhdx, size: 16M }'));
    const refused = await sb.run('apply');
    expect(refused.code).toBe(1);
    expect(refused.stderr).toMatch(/must be rebuilt \(size 8 MiB -> 16 MiB \(vhdx cannot grow in place\)\).*--allow-replace/);
    expect((await qemuInfo(p('x.vhdx')))['virtual-size']).toBe(8 * MiB);
    const ok = await sb.run('apply', '--allow-replace');
    expect(ok.stdout).toMatch(/1 replaced/);
    expect((await qemuInfo(p('x.vhdx')))['virtual-size']).toBe(16 * MiB);
  });

  it('a VHD made by another tool, rounded to its CHS geometry, is in sync', async () => {
    sb = await sandbox('vhd-chs');
    await qemuImg('create', '-q', '-f', 'vpc', '-o', 'subformat=dynamic', p('azure.vhd'), '30G');
    expect((await qemuInfo(p('azure.vhd')))['virtual-size']).not.toBe(30 * 1024 * MiB);
    await sb.yaml(one('azure', '{ path: $DIR/azure.vhd, format: vhd, size: 30G, vhd: { subformat: dynamic }, adopt: true }'));
    const r = await sb.run('plan', '--detailed-exitcode');
    expect(r.code).toBe(0);
  });
});

describe('replace guard', () => {
  it('a format change is a replace that needs --allow-replace; protect: true refuses it always', async () => {
    sb = await sandbox('replace');
    await sb.yaml(one('d', '{ path: $DIR/d.img, format: qcow2, size: 8M }'));
    await sb.run('apply');
    await sb.yaml(one('d', '{ path: $DIR/d.img, format: raw, size: 8M, protect: true }'));
    const prot = await sb.run('apply', '--allow-replace');
    expect(prot.code).toBe(1);
    expect(prot.stderr).toMatch(/would be replaced \(format qcow2 -> raw\), but the image has protect: true/);
    expect((await qemuInfo(p('d.img'))).format).toBe('qcow2');
    await sb.yaml(one('d', '{ path: $DIR/d.img, format: raw, size: 8M }'));
    const plan = await sb.run('plan', '--allow-replace');
    expect(plan.stdout).toMatch(/-\/\+ images\.d\s+replace\s+format qcow2 -> raw\s+\[destructive\]/);
    expect((await sb.run('apply')).code).toBe(1);
    expect((await qemuInfo(p('d.img'))).format).toBe('qcow2');
    expect((await sb.run('apply', '--allow-replace')).code).toBe(0);
    expect((await qemuInfo(p('d.img'))).format).toBe('raw');
  });

  it('a changed qcow2 creation option (cluster size) is a replace', async () => {
    sb = await sandbox('cluster');
    await sb.yaml(one('c', '{ path: $DIR/c.qcow2, size: 8M, qcow2: { clusterSize: 64K } }'));
    await sb.run('apply');
    await sb.yaml(one('c', '{ path: $DIR/c.qcow2, size: 8M, qcow2: { clusterSize: 1M } }'));
    const r = await sb.run('plan', '--allow-replace');
    expect(r.stdout).toMatch(/replace\s+qcow2\.clusterSize 64 KiB -> 1 MiB/);
    await sb.run('apply', '--allow-replace');
    expect((await qemuInfo(p('c.qcow2')))['cluster-size']).toBe(MiB);
  });

  it('will not rebuild a base image that an overlay depends on', async () => {
    sb = await sandbox('base');
    await sb.yaml(`version: 1\nimages:\n  base: { path: $DIR/base.qcow2, size: 8M }\n  top: { path: $DIR/top.qcow2, source: { backing: base } }\n`);
    await sb.run('apply');
    await sb.yaml(`version: 1\nimages:\n  base: { path: $DIR/base.qcow2, size: 8M, qcow2: { clusterSize: 128K } }\n  top: { path: $DIR/top.qcow2, source: { backing: base } }\n`);
    const r = await sb.run('apply', '--allow-replace');
    expect(r.code).toBe(1);
    expect(r.stderr).toMatch(/images\.top is an overlay on it and would be corrupted/);
  });
});

describe('ownership and prune', () => {
  it('prunes only what it created, only with --prune; adopted files are never deleted', async () => {
    sb = await sandbox('prune');
    await qemuImg('create', '-q', '-f', 'qcow2', p('mine-not.qcow2'), '4M');
    await sb.yaml(`version: 1\nimages:\n  made: { path: $DIR/made.qcow2, size: 4M }\n  adopted: { path: $DIR/mine-not.qcow2, size: 4M, adopt: true }\n`);
    await sb.run('apply');
    const inv = JSON.parse(await readFile(path.join(sb.stateDir, 'inventory.json'), 'utf8'));
    expect(Object.keys(inv.objects)).toEqual([`image:${p('made.qcow2')}`]);
    await sb.yaml('version: 1\nimages: {}\n');
    const plan = await sb.run('plan', '--detailed-exitcode');
    expect(plan.code).toBe(0);
    expect(plan.stdout).toMatch(/made\.qcow2 \(was images\.made\) left the YAML; `apply --prune` deletes it/);
    expect((await sb.run('apply')).code).toBe(0);
    expect(existsSync(p('made.qcow2'))).toBe(true);
    const pruned = await sb.run('apply', '--prune');
    expect(pruned.stdout).toMatch(/1 deleted/);
    expect(existsSync(p('made.qcow2'))).toBe(false);
    expect(existsSync(p('mine-not.qcow2'))).toBe(true);
    const inv2 = JSON.parse(await readFile(path.join(sb.stateDir, 'inventory.json'), 'utf8'));
    expect(inv2.objects).toEqual({});
  });

  it('does not delete a file that replaced the one it created', async () => {
    sb = await sandbox('prune-swap');
    await sb.yaml(one('x', '{ path: $DIR/x.qcow2, size: 4M }'));
    await sb.run('apply');
    await rm(p('x.qcow2'));
    await qemuImg('create', '-q', '-f', 'raw', p('x.qcow2'), '1M');
    await sb.yaml('version: 1\n');
    const r = await sb.run('apply', '--prune');
    expect(r.code).toBe(0);
    expect(existsSync(p('x.qcow2'))).toBe(true);
    expect((await qemuInfo(p('x.qcow2'))).format).toBe('raw');
  });

  it('prunes every extent of a multi-file vmdk', async () => {
    sb = await sandbox('prune-vmdk');
    await sb.yaml(one('v', '{ path: $DIR/v.vmdk, format: vmdk, size: 10M, vmdk: { subformat: monolithicFlat } }'));
    await sb.run('apply');
    expect(existsSync(p('v-flat.vmdk'))).toBe(true);
    await sb.yaml('version: 1\n');
    await sb.run('apply', '--prune');
    expect(await readdir(sb.dir).then((n) => n.filter((f) => f.endsWith('.vmdk')))).toEqual([]);
  });
});

describe('permissions drift', () => {
  it('puts back mode and owner in place', async () => {
    sb = await sandbox('perm');
    await sb.yaml(one('s', '{ path: $DIR/s.qcow2, size: 4M, permissions: { owner: 107, group: 107, mode: "0600" } }'));
    await sb.run('apply');
    const ino = statSync(p('s.qcow2')).ino;
    await chmod(p('s.qcow2'), 0o644);
    await execa('chown', ['0:0', p('s.qcow2')]);
    const plan = await sb.run('plan');
    expect(plan.stdout).toMatch(/update\s+owner 0 -> 107, group 0 -> 107, mode 0644 -> 0600/);
    await sb.resetTrace();
    await sb.run('apply');
    const st = statSync(p('s.qcow2'));
    expect([st.uid, st.gid, st.mode & 0o777, st.ino]).toEqual([107, 107, 0o600, ino]);
    expect(writers(await sb.spawned())).toEqual([]);
  });
});

describe('saved plans and exit codes', () => {
  it('apply PLAN executes exactly that plan, and refuses it once the host moved', async () => {
    sb = await sandbox('saved');
    await sb.yaml(`version: 1\nimages:\n  a: { path: $DIR/a.qcow2, size: 4M }\n  b: { path: $DIR/b.qcow2, size: 4M }\n`);
    const planFile = p('plan.json');
    const made = await sb.run('plan', '--out', planFile, '--detailed-exitcode');
    expect(made.code).toBe(2);
    const saved = JSON.parse(await readFile(planFile, 'utf8'));
    expect(saved.actions.map((a: { id: string; kind: string }) => `${a.kind} ${a.id}`)).toEqual(['create images.a', 'create images.b']);
    // The YAML changes after the plan: apply PLAN still does what the plan says, nothing else.
    await sb.yaml('version: 1\nimages:\n  c: { path: $DIR/c.qcow2, size: 4M }\n');
    const r = await sb.run('apply', planFile);
    expect(r.stdout).toMatch(/2 created/);
    expect([existsSync(p('a.qcow2')), existsSync(p('b.qcow2')), existsSync(p('c.qcow2'))]).toEqual([true, true, false]);

    await sb.yaml('version: 1\nimages:\n  a: { path: $DIR/a.qcow2, size: 8M }\n  b: { path: $DIR/b.qcow2, size: 4M }\n');
    await sb.run('plan', '--out', planFile);
    await qemuImg('resize', '-q', p('a.qcow2'), '6M');
    const stale = await sb.run('apply', planFile);
    expect(stale.code).toBe(1);
    expect(stale.stderr).toMatch(/the host changed since .*plan\.json was made \(.*a\.qcow2\); nothing was applied/);
    expect((await qemuInfo(p('a.qcow2')))['virtual-size']).toBe(6 * MiB);
  });

  it('plan --detailed-exitcode: 0 no changes, 2 changes, 1 error; -o json prints the plan value', async () => {
    sb = await sandbox('exit');
    await sb.yaml(one('a', '{ path: $DIR/a.qcow2, size: 4M }'));
    const json = await sb.run('plan', '-o', 'json', '--detailed-exitcode');
    expect(json.code).toBe(2);
    const plan = JSON.parse(json.stdout);
    expect(plan.actions[0]).toMatchObject({ id: 'images.a', kind: 'create', destructive: false });
    await sb.run('apply');
    expect((await sb.run('plan', '--detailed-exitcode')).code).toBe(0);
    await sb.yaml(one('a', '{ path: $DIR/a.qcow2, size: nope }'));
    expect((await sb.run('plan', '--detailed-exitcode')).code).toBe(1);
  });

  it('reads a directory of files as one desired state', async () => {
    sb = await sandbox('dir');
    await mkdir(p('conf/nested'), { recursive: true });
    await sb.yaml(one('a', '{ path: $DIR/a.qcow2, size: 4M }'), 'conf/a.yaml');
    await sb.yaml(one('b', '{ path: $DIR/b.raw, format: raw, size: 4M }'), 'conf/nested/b.yml');
    await writeFile(p('conf/README.txt'), 'not yaml');
    const r = await sb.run('apply', '-f', p('conf'));
    expect(r.stdout).toMatch(/2 created/);
    const show = await sb.run('show', '-f', p('conf'), '-o', 'json');
    expect(JSON.parse(show.stdout).images.map((i: { name: string; status: string }) => `${i.name}:${i.status}`)).toEqual(['a:in-sync', 'b:in-sync']);
  });
});

describe('the apply lock', () => {
  it('a second apply waits for the first, then finds nothing to do', async () => {
    // (Its image's libvirt secret goes to a daemon of the test's own, not the host's.)
    const lv = await startPrivateLibvirtd();
    onTestFinished(() => lv.stop());
    sb = await sandbox('lock', { libvirt: lv });
    await writeFile(p('pass'), 'x'.repeat(32), { mode: 0o600 });
    await sb.yaml(one('slow', '{ path: $DIR/slow.qcow2, size: 4M, encryption: { format: luks, passphraseFile: $DIR/pass } }'));
    const first = sb.run('apply');
    await waitFor(() => existsSync(path.join(sb.stateDir, 'apply.lock', 'holder.json')), 'the first apply to hold the lock');
    const second = await sb.run('apply');
    expect(second.stderr).toMatch(/waiting for the lock on .*, held by pid \d+ \(apply/);
    expect(second.stdout).toMatch(/No changes/);
    expect((await first).stdout).toMatch(/2 created/);
  });

  it('--lock-timeout 0 fails at once; a lock whose process is gone is taken over', async () => {
    sb = await sandbox('lock0');
    await sb.yaml(one('a', '{ path: $DIR/a.qcow2, size: 4M }'));
    const holder = spawn('sleep', ['30']);
    const boot = (await readFile('/proc/sys/kernel/random/boot_id', 'utf8')).trim();
    await mkdir(path.join(sb.stateDir, 'apply.lock'), { recursive: true });
    const rec = { pid: holder.pid, host: hostname(), boot, command: 'apply', since: new Date().toISOString() };
    await writeFile(path.join(sb.stateDir, 'apply.lock', 'holder.json'), JSON.stringify(rec));
    const r = await sb.run('apply', '--lock-timeout', '0');
    expect(r.code).toBe(1);
    expect(r.stderr).toMatch(new RegExp(`locked by pid ${holder.pid} .*not waiting \\(--lock-timeout 0\\)`));
    expect(existsSync(p('a.qcow2'))).toBe(false);
    holder.kill('SIGKILL');
    await new Promise((res) => holder.once('exit', res));
    const again = await sb.run('apply', '--lock-timeout', '0');
    expect(again.stderr).toMatch(new RegExp(`taking over the lock of pid ${holder.pid}`));
    expect(again.code).toBe(0);
    expect(existsSync(p('a.qcow2'))).toBe(true);
  });
});

describe('crash safety', () => {
  it('kill -9 during a conversion leaves no image under the declared name; the next apply converges', async () => {
    sb = await sandbox('kill');
    await execa('sh', ['-c', `head -c 256M /dev/urandom > '${p('src.raw')}'`]);
    await sb.yaml(one('big', '{ path: $DIR/big.qcow2, source: { file: $DIR/src.raw }, qcow2: { compressed: true } }'));
    const child = spawn('node', [CLI, 'apply', '-f', p('storage.yaml'), '--state-dir', sb.stateDir], {
      detached: true,
      stdio: 'ignore',
      env: { ...process.env, VIRT_RECONCILE_TRACE: sb.trace },
    });
    await waitForSpawn(sb, 'convert');
    await new Promise((r) => setTimeout(r, 500));
    process.kill(-child.pid!, 'SIGKILL'); // the whole process group, as a service manager would
    await new Promise((r) => child.once('exit', r));
    expect(existsSync(p('big.qcow2'))).toBe(false);
    expect((await readdir(sb.dir)).some((n) => n.startsWith('.big.qcow2.reconcile-'))).toBe(true);

    const r = await sb.run('apply');
    expect(r.code).toBe(0);
    expect(r.stdout).toMatch(/removed .*\.big\.qcow2\.reconcile-.*, left by an interrupted apply/);
    expect(r.stdout).toMatch(/1 created/);
    await expect(qemuImg('compare', '-F', 'raw', p('big.qcow2'), p('src.raw'))).resolves.toMatch(/identical/);
    expect((await readdir(sb.dir)).filter((n) => n.includes('.reconcile-'))).toEqual([]);
    expect((await sb.run('plan', '--detailed-exitcode')).code).toBe(0);
  });
});
