// `reconcile watch` as a real process: local files and a git repository as sources, drift
// healing, rejected revisions, metrics, the status page in headless Chromium, the webhook's
// signature check, SIGTERM in the middle of an apply, and a missed backup caught up at start.
import { createHmac } from 'node:crypto';
import { existsSync } from 'node:fs';
import { chmod, mkdir, readdir, readFile, rm, writeFile } from 'node:fs/promises';
import path from 'node:path';
import { execa } from 'execa';
import { afterAll, afterEach, describe, expect, it } from 'vitest';
import { startPrivateLibvirtd, type PrivateLibvirtd } from '../src/dev/private-libvirtd.js';
import { qemuInfo, sandbox, type Sandbox } from './helpers.js';
import { procs, startWatch, until } from './watch-helpers.js';

const MiB = 1024 * 1024;
const boxes: Sandbox[] = [];
afterEach(() => {
  for (const p of procs.splice(0)) if (p.exitCode === null) p.kill('SIGKILL');
});
afterAll(async () => {
  for (const b of boxes) await b.cleanup();
});

const size = async (f: string) => (await qemuInfo(f))['virtual-size'] as number;

describe('watch with local files', () => {
  it('applies, follows file changes, keeps the last good revision, heals drift, serves metrics and a status page, stops on SIGTERM', async () => {
    const sb = await sandbox('watch-local');
    boxes.push(sb);
    const yaml = (s: string) => `version: 1\nimages:\n  app: { path: $DIR/app.qcow2, size: ${s} }\n`;
    const conf = await sb.yaml(yaml('8M'));
    const w = await startWatch(sb, ['-f', conf, '--interval', '2s']);
    await until(async () => (await fetch(`${w.url}/readyz`)).status === 200, 'ready');
    expect(await size(path.join(sb.dir, 'app.qcow2'))).toBe(8 * MiB);

    const first = (await w.status()).appliedRevision as string;
    await sb.yaml(yaml('16M'));
    // The revision is recorded once its apply (and the re-observation after it) completed.
    const good = await until(async () => {
      const r = (await w.status()).appliedRevision as string;
      return r !== first && r;
    }, 'the new revision to be in force');
    expect(await size(path.join(sb.dir, 'app.qcow2'))).toBe(16 * MiB);

    await sb.yaml(yaml('lots'));
    const st = await until(async () => {
      const s = await w.status();
      return s.rejectedRevision && s;
    }, 'the bad revision to be rejected');
    expect(st.rejectedRevision.error).toMatch(/storage\.yaml:3:\d+: images\.app\.size: must be/);
    expect(st.appliedRevision).toBe(good);

    // Drift under the last good revision: the deleted image comes back at 16M.
    await rm(path.join(sb.dir, 'app.qcow2'));
    await until(async () => existsSync(path.join(sb.dir, 'app.qcow2')) && (await size(path.join(sb.dir, 'app.qcow2'))) === 16 * MiB, 'drift to be healed');

    // Counters move once the apply has returned, a moment after the file reappears.
    const metrics = await until(async () => {
      const m = await (await fetch(`${w.url}/metrics`)).text();
      return /^virt_reconcile_drift_corrections_total\{kind="image",host="[^"]+"\} [1-9]/m.test(m) && m;
    }, 'the drift correction to be counted');
    const value = (name: string) => Number(new RegExp(`^${name}(?:\\{[^}]*\\})? ([0-9.e+-]+)$`, 'm').exec(metrics)?.[1]);
    expect(value('virt_reconcile_reconciles_total')).toBeGreaterThanOrEqual(3);
    expect(value('virt_reconcile_reconcile_errors_total')).toBeGreaterThanOrEqual(1);
    expect(value('virt_reconcile_drift_corrections_total')).toBeGreaterThanOrEqual(1);
    expect(value('virt_reconcile_reconcile_duration_seconds_count')).toBeGreaterThanOrEqual(3);
    expect(metrics).toMatch(new RegExp(`virt_reconcile_applied_revision_info\\{revision="${good.replace(/[.*+?^${}()|[\]\\]/g, '\\$&')}",host="[^"]+"\\} 1`));
    expect(metrics).toMatch(/virt_reconcile_resources\{kind="image",state="in-sync",host="[^"]+"\} 1/);

    // The status page, rendered by a real headless Chromium.
    const profile = path.join(sb.dir, 'chromium');
    const flags = [
      '--headless',
      '--no-sandbox',
      '--disable-gpu',
      '--disable-quic',
      '--no-first-run',
      '--disable-background-networking',
      '--disable-component-update',
      '--disable-sync',
      `--user-data-dir=${profile}`,
    ];
    const dom = String((await execa('chromium', [...flags, '--dump-dom', `${w.url}/`], { timeout: 60_000 })).stdout);
    expect(dom).toMatch(/Revision in force/);
    expect(dom).toContain(good);
    expect(dom).toMatch(/<td>app<\/td>/);
    expect(dom).toMatch(/Rejected revision/);
    await execa('chromium', [...flags, '--window-size=1200,900', `--screenshot=${path.join(sb.dir, 'status.png')}`, `${w.url}/`], { timeout: 60_000 });
    expect((await readFile(path.join(sb.dir, 'status.png'))).subarray(1, 4).toString()).toBe('PNG');
    if (process.env.VR_KEEP_SCREENSHOT) await execa('cp', [path.join(sb.dir, 'status.png'), process.env.VR_KEEP_SCREENSHOT]);

    w.proc.kill('SIGTERM');
    expect(await w.exit()).toBe(0);
    expect(w.log()).toMatch(/SIGTERM: stopping: no new action starts[\s\S]*stopped/);
  });

  it('SIGHUP reconciles now, without waiting for the interval; a burst of them runs at most one more', async () => {
    const sb = await sandbox('watch-hup');
    boxes.push(sb);
    const conf = await sb.yaml('version: 1\nimages:\n  h: { path: $DIR/h.qcow2, size: 4M }\n');
    const w = await startWatch(sb, ['-f', conf, '--interval', '1h']);
    const f = path.join(sb.dir, 'h.qcow2');
    await until(async () => existsSync(f) && (await w.status()).lastReconcile?.ok, 'the first reconcile');
    await rm(f);
    w.proc.kill('SIGHUP');
    await until(async () => existsSync(f), 'the image healed after SIGHUP', 10_000);
    expect(w.log()).toMatch(/SIGHUP: reconciling now/);
    await until(async () => /reconciled local@sha256:\w+ in [\d.]+s \(SIGHUP\): 1 created, 0 updated, 0 replaced, 0 deleted/.test(w.log()), 'the SIGHUP run to say what it did');
    expect(w.log()).toMatch(/watching .* every 1h;/);
    const runs = async () => Number(/^virt_reconcile_reconciles_total\{host="[^"]+"\} (\d+)/m.exec(await (await fetch(`${w.url}/metrics`)).text())?.[1]);
    await until(async () => (await w.status()).lastReconcile?.ok && (await runs()) === 2, 'the SIGHUP reconcile to finish');
    for (let i = 0; i < 5; i++) w.proc.kill('SIGHUP');
    await until(async () => (await runs()) >= 3, 'the burst to run');
    await new Promise((r) => setTimeout(r, 1500));
    expect(await runs()).toBeLessThanOrEqual(4);
    w.proc.kill('SIGTERM');
    expect(await w.exit()).toBe(0);
  });

  it('--suspend serves status but changes nothing', async () => {
    const sb = await sandbox('watch-suspend');
    boxes.push(sb);
    const conf = await sb.yaml('version: 1\nimages:\n  s: { path: $DIR/s.qcow2, size: 4M }\n');
    const w = await startWatch(sb, ['-f', conf, '--interval', '1s', '--suspend']);
    await until(async () => /suspended: not reconciling/.test(w.log()), 'a suspended round');
    await new Promise((r) => setTimeout(r, 2500));
    expect(existsSync(path.join(sb.dir, 's.qcow2'))).toBe(false);
    expect((await w.status()).suspended).toBe(true);
    expect((await fetch(`${w.url}/readyz`)).status).toBe(503);
    w.proc.kill('SIGTERM');
    expect(await w.exit()).toBe(0);
  });

  it('SIGTERM in the middle of an apply: the build in flight is cancelled and cleaned up, no further action starts', async () => {
    const sb = await sandbox('watch-term');
    boxes.push(sb);
    await writeFile(path.join(sb.dir, 'pass'), 'x'.repeat(32));
    const conf = await sb.yaml(`version: 1
images:
  a1: { path: $DIR/a1.qcow2, size: 4M, encryption: { format: luks, passphraseFile: $DIR/pass } }
  a2: { path: $DIR/a2.qcow2, size: 4M, encryption: { format: luks, passphraseFile: $DIR/pass } }
`);
    const w = await startWatch(sb, ['-f', conf, '--interval', '1m', '--parallelism', '1']);
    await until(async () => /images\.a1: creating/.test(w.log()), 'the first action to start');
    w.proc.kill('SIGTERM');
    expect(await w.exit()).toBe(0);
    expect(w.log()).toMatch(/images\.a1: cancelled \(shutting down\)/);
    expect(w.log()).toMatch(/images\.a2: not started \(shutting down\)/);
    expect(existsSync(path.join(sb.dir, 'a1.qcow2'))).toBe(false);
    expect(existsSync(path.join(sb.dir, 'a2.qcow2'))).toBe(false);
    expect((await readdir(sb.dir)).filter((n) => n.includes('.reconcile-'))).toEqual([]);
  });
});

describe('watch with a git repository', () => {
  it('applies commits, rejects a bad one keeping the previous revision, and checks webhook signatures', async () => {
    const sb = await sandbox('watch-git');
    boxes.push(sb);
    const bare = path.join(sb.dir, 'repo.git');
    const work = path.join(sb.dir, 'work');
    const git = (...a: string[]) => execa('git', ['-C', work, '-c', 'user.name=t', '-c', 'user.email=t@example.com', ...a]);
    await execa('git', ['init', '-q', '--bare', '-b', 'main', bare]);
    await execa('git', ['clone', '-q', bare, work]);
    await mkdir(path.join(work, 'conf'));
    const commit = async (sizeText: string, msg: string) => {
      await writeFile(path.join(work, 'conf', 'storage.yaml'), `version: 1\nimages:\n  g: { path: ${sb.dir}/g.qcow2, size: ${sizeText} }\n`);
      await git('add', '-A');
      await git('commit', '-q', '-m', msg);
      await git('push', '-q', 'origin', 'HEAD:main');
      return String((await git('rev-parse', 'HEAD')).stdout).trim();
    };
    const first = await commit('8M', 'first');
    await writeFile(path.join(sb.dir, 'hook-secret'), 's3cret\n');
    const w = await startWatch(sb, ['--git', `file://${bare}`, '--ref', 'main', '--path', 'conf', '--interval', '3s', '--webhook-secret-file', path.join(sb.dir, 'hook-secret')]);
    await until(async () => (await w.status()).appliedRevision === `main@sha1:${first}`, 'the first commit to be applied');
    expect(await size(path.join(sb.dir, 'g.qcow2'))).toBe(8 * MiB);

    // Without any webhook: the next fetch, within the interval, applies a pushed commit.
    const polled = await commit('10M', 'polled');
    await until(async () => (await w.status()).appliedRevision === `main@sha1:${polled}`, 'the commit to be applied within the interval', 10_000);
    expect(await size(path.join(sb.dir, 'g.qcow2'))).toBe(10 * MiB);

    const body = JSON.stringify({ ref: 'refs/heads/main' });
    const sign = (secret: string) => `sha256=${createHmac('sha256', secret).update(body).digest('hex')}`;
    const bad = await fetch(`${w.url}/hooks/git`, { method: 'POST', body, headers: { 'x-hub-signature-256': sign('wrong') } });
    expect(bad.status).toBe(401);
    const second = await commit('12M', 'grow');
    const ok = await fetch(`${w.url}/hooks/git`, { method: 'POST', body, headers: { 'x-hub-signature-256': sign('s3cret') } });
    expect(ok.status).toBe(202);
    await until(async () => (await w.status()).appliedRevision === `main@sha1:${second}`, 'the pushed commit to be applied (webhook)', 20_000);
    expect(await size(path.join(sb.dir, 'g.qcow2'))).toBe(12 * MiB);
    expect(w.log()).toMatch(/webhook: signature valid, fetching and reconciling/);
    expect(w.log()).toMatch(/webhook refused: bad or missing X-Hub-Signature-256/);

    const broken = await commit('12 parsecs', 'broken');
    await fetch(`${w.url}/hooks/git`, { method: 'POST', body, headers: { 'x-hub-signature-256': sign('s3cret') } });
    const st = await until(async () => {
      const s = await w.status();
      return s.rejectedRevision?.revision === `main@sha1:${broken}` && s;
    }, 'the broken commit to be rejected');
    expect(st.appliedRevision).toBe(`main@sha1:${second}`);
    expect(await size(path.join(sb.dir, 'g.qcow2'))).toBe(12 * MiB);
    w.proc.kill('SIGTERM');
    expect(await w.exit()).toBe(0);

    // Pinned to a tag: the tagged commit is in force, whatever main (now the broken commit) says.
    await git('tag', 'v1', second);
    await git('push', '-q', 'origin', 'v1');
    // Same host, same state directory: the image the first service made is its own.
    const t = await startWatch(sb, ['--git', `file://${bare}`, '--ref', 'v1', '--path', 'conf', '--interval', '1m']);
    await until(async () => (await t.status()).appliedRevision === `v1@sha1:${second}`, 'the tagged commit to be in force');
    expect((await t.status()).rejectedRevision).toBeUndefined();
    t.proc.kill('SIGTERM');
    expect(await t.exit()).toBe(0);
  });
});

const consecutive = (r: { stdout: string }) => (JSON.parse(r.stdout) as { status: string }[]).filter((x) => x.status === 'failed').length;

describe('watch and backup schedules', () => {
  let lv: PrivateLibvirtd | undefined;
  afterAll(async () => lv?.stop());
  /** A sandbox on the block's private libvirtd (started once), its directory open to QEMU, and this YAML in it. */
  const onPrivateLibvirtd = async (name: string, yaml: string) => {
    lv ??= await startPrivateLibvirtd();
    const daemon = lv;
    const sb = await sandbox(name, { libvirt: daemon });
    boxes.push(sb);
    await chmod(sb.dir, 0o755);
    return { sb, conf: await sb.yaml(yaml), lv: daemon };
  };

  it('heals drift on libvirt objects: a deleted volume comes back, a changed cache mode is reset', async () => {
    const { sb, conf, lv } = await onPrivateLibvirtd(
      'watch-drift',
      `version: 1
pools:
  wp: { type: dir, path: $DIR/pool }
images:
  vol: { pool: wp, size: 8M }
vms:
  dv: { create: { memory: 64M, vcpus: 1 }, disks: [{ image: vol, cache: none }] }
`,
    );
    const w = await startWatch(sb, ['-f', conf, '--interval', '2s', '--connect', lv.uri], lv.nsenter);
    await until(async () => (await fetch(`${w.url}/readyz`)).status === 200, 'ready');
    const v = (...a: string[]) => execa('virsh', ['-q', '-c', lv!.uri, ...a]).then((r) => String(r.stdout));
    await v('vol-delete', '--pool', 'wp', 'vol.qcow2');
    await until(async () => (await v('vol-list', 'wp')).includes('vol.qcow2'), 'the deleted volume to come back');
    const disk = (await v('dumpxml', '--inactive', 'dv')).split('<disk')[1]!.split('</disk>')[0]!;
    await writeFile(path.join(sb.dir, 'disk.xml'), `<disk${disk.replace("cache='none'", "cache='writeback'")}</disk>`);
    await v('update-device', 'dv', path.join(sb.dir, 'disk.xml'), '--config');
    expect(await v('dumpxml', '--inactive', 'dv')).toMatch(/cache='writeback'/);
    await until(async () => /cache='none'/.test(await v('dumpxml', '--inactive', 'dv')), 'the cache mode to be reset');
    // Counted once each apply has returned.
    const metrics = await until(async () => {
      const m = await (await fetch(`${w.url}/metrics`)).text();
      return /drift_corrections_total\{kind="volume",host="[^"]+"\} [1-9]/.test(m) && /drift_corrections_total\{kind="domain",host="[^"]+"\} [1-9]/.test(m) && m;
    }, 'both drift corrections to be counted');
    expect(metrics).toMatch(/virt_reconcile_pool_capacity_bytes\{pool="wp",host="[^"]+"\} \d+/);
    w.proc.kill('SIGTERM');
    expect(await w.exit()).toBe(0);
  });

  it('reports a run missed while it was down and catches up once at start', async () => {
    const { sb, conf, lv } = await onPrivateLibvirtd(
      'watch-backup',
      `version: 1
images:
  d: { path: $DIR/d.qcow2, size: 8M }
vms:
  v: { create: { memory: 64M, vcpus: 1 }, disks: [{ image: d }] }
backups:
  daily: { vm: v, schedule: "30 1 * * *", mode: copy, destination: $DIR/bk, keep: 3 }
`,
    );
    await mkdir(sb.stateDir, { recursive: true });
    await writeFile(path.join(sb.stateDir, 'backups.json'), JSON.stringify({ version: 1, runs: [], lastSuccess: { daily: '2020-01-01T00:00:00.000Z' }, lastFailure: {} }));
    const w = await startWatch(sb, ['-f', conf, '--interval', '1m', '--connect', lv.uri], lv.nsenter);
    await until(async () => (await readdir(path.join(sb.dir, 'bk')).catch(() => [])).some((f) => f.endsWith('-vda.qcow2')), 'the catch-up backup', 60_000);
    expect(w.log()).toMatch(/backups\.daily is overdue: last success 2020-01-01T00:00:00\.000Z.*one catch-up run now/);
    const st = await until(async () => {
      const s = await w.status();
      return s.backups?.[0]?.lastSuccess !== '2020-01-01T00:00:00.000Z' && s;
    }, 'the status to show the new backup');
    expect(st.backups[0].nextRun).toMatch(/T\d\d:30:00/);
    w.proc.kill('SIGTERM');
    expect(await w.exit()).toBe(0);
  });

  it('a schedule suspended after maxFailures failed runs is not run; /status and /metrics say so per schedule', async () => {
    const { sb, conf, lv } = await onPrivateLibvirtd(
      'watch-suspended',
      `version: 1
images:
  d: { path: $DIR/d.qcow2, size: 8M }
vms:
  v: { create: { memory: 64M, vcpus: 1 }, disks: [{ image: d }] }
backups:
  fails: { vm: v, schedule: "* * * * *", mode: copy, destination: $DIR/bk, maxFailures: 2, hooks: { pre: [["false"]] } }
`,
    );
    expect((await sb.run('apply')).code).toBe(0);
    for (let i = 0; i < 2; i++) expect((await sb.run('backup', 'run', 'fails')).code).not.toBe(0);
    const w = await startWatch(sb, ['-f', conf, '--interval', '1m', '--connect', lv.uri], lv.nsenter);
    const st = await until(async () => {
      const s = await w.status();
      return s.backups?.[0]?.suspended && s;
    }, 'the status to show the suspension');
    expect(st.backups[0]).toMatchObject({ name: 'fails', consecutiveFailures: 2, suspended: { failures: 2 } });
    expect(st.backups[0].nextRun).toBeUndefined();
    expect(st.backups[0].lastFailure.error).toMatch(/false/);
    const m = await (await fetch(`${w.url}/metrics`)).text();
    expect(m).toMatch(/virt_reconcile_backup_suspended\{backup="fails",host="[^"]+"\} 1/);
    expect(m).toMatch(/virt_reconcile_backup_consecutive_failures\{backup="fails",host="[^"]+"\} 2/);
    expect(m).toMatch(/virt_reconcile_backup_last_failure_timestamp_seconds\{backup="fails",host="[^"]+"\} \d+/);
    // Its every-minute cron fires, and the run is skipped, said once per firing.
    await until(async () => /backups\.fails is suspended after failed runs in a row: not run/.test(w.log()), 'the cron to fire and skip', 70_000);
    expect(consecutive(await sb.run('backup', 'list', 'fails', '-o', 'json'))).toBe(2);
    w.proc.kill('SIGTERM');
    expect(await w.exit()).toBe(0);
  });
});
