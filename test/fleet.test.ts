// A fleet from one repository: three simulated hosts on this machine, each with its own
// libvirtd (a private one, in a mount namespace of its own with a private /srv/vr-fleet-test),
// its own state directory and its own agent (`reconcile watch --git … --host hN`), all pulling
// one bare repository. Files select hosts with `hosts:` (names, globs, labels); the agents are
// checked from outside: the files each host's /srv holds, the pools each libvirtd has.
import { existsSync } from 'node:fs';
import { mkdir, rm, writeFile } from 'node:fs/promises';
import path from 'node:path';
import { execa } from 'execa';
import { afterAll, afterEach, beforeAll, describe, expect, it } from 'vitest';
import { startPrivateLibvirtd, type PrivateLibvirtd } from '../src/dev/private-libvirtd.js';
import { cli, qemuInfo, sandbox, type Sandbox } from './helpers.js';
import { procs, startWatch, until, type Watch } from './watch-helpers.js';

const MiB = 1024 * 1024;
const SRV = '/srv/vr-fleet-test';
const HOSTS = ['h1', 'h2', 'h3'] as const;
const LABELS: Record<string, string[]> = { h1: ['role=web'], h2: ['role=db'], h3: ['role=web'] };

let repo: Sandbox;
const hosts: { name: string; lv: PrivateLibvirtd; sb: Sandbox }[] = [];
const work = () => path.join(repo.dir, 'work');
const bare = () => path.join(repo.dir, 'fleet.git');
const git = (...a: string[]) => execa('git', ['-C', work(), '-c', 'user.name=t', '-c', 'user.email=t@example.com', ...a]);

/** Writes the files (null: removes it), commits and pushes; the revision as the agents name it. */
async function commit(files: Record<string, string | null>, msg: string): Promise<string> {
  for (const [f, text] of Object.entries(files)) {
    const p = path.join(work(), 'fleet', f);
    if (text === null) await rm(p, { force: true });
    else await writeFile(p, text);
  }
  await git('add', '-A');
  await git('commit', '-q', '-m', msg);
  await git('push', '-q', 'origin', 'HEAD:main');
  return `main@sha1:${String((await git('rev-parse', 'HEAD')).stdout).trim()}`;
}

/** What a host's private /srv/vr-fleet-test holds (its bind-mount source, seen from outside). */
const onHost = (h: (typeof hosts)[number], f: string) => path.join(h.lv.base, 'private', '0', f);
const sizeOn = async (h: (typeof hosts)[number], f: string) => (await qemuInfo(onHost(h, f)))['virtual-size'] as number;

const shared = (size: string) => `version: 1
pools:
  local: { type: dir, path: ${SRV}/pool }
images:
  base: { path: ${SRV}/base.qcow2, size: ${size} }
`;
const forH2 = (size: string) => `version: 1
hosts: [h2]
images:
  only-h2: { path: ${SRV}/only-h2.qcow2, size: ${size} }
`;
// A glob and a label: h1 and h3 by name, and any host labelled role=web.
const web = (size: string) => `version: 1
hosts: ["h[13]", { label: "role=web" }]
images:
  web: { pool: local, volume: web.qcow2, size: ${size} }
`;
const forH3 = (size: string) => `version: 1
hosts: [h3]
images:
  only-h3: { path: ${SRV}/only-h3.qcow2, size: ${size} }
`;

beforeAll(async () => {
  repo = await sandbox('fleet-repo');
  await execa('git', ['init', '-q', '--bare', '-b', 'main', bare()]);
  await execa('git', ['clone', '-q', bare(), work()]);
  await mkdir(path.join(work(), 'fleet'));
  for (const name of HOSTS) {
    const lv = await startPrivateLibvirtd({ privateDirs: [SRV] });
    hosts.push({ name, lv, sb: await sandbox(`fleet-${name}`, { libvirt: lv }) });
  }
}, 120_000);

afterEach(() => {
  for (const p of procs.splice(0)) if (p.exitCode === null) p.kill('SIGKILL');
});

afterAll(async () => {
  for (const h of hosts) {
    await h.lv.stop().catch(() => undefined);
    await h.sb.cleanup();
  }
  await repo?.cleanup();
});

describe('a fleet of three hosts pulling one repository', () => {
  it('a shared commit reaches all three, a commit to h2 only h2, a broken commit for h3 is rejected on h3 only while h1 and h2 apply theirs', { timeout: 300_000 }, async () => {
    const first = await commit({ 'shared.yaml': shared('8M'), 'h2.yaml': forH2('8M'), 'web.yaml': web('8M'), 'h3.yaml': forH3('8M') }, 'first');
    const agents: Record<string, Watch> = {};
    for (const h of hosts) {
      agents[h.name] = await startWatch(
        h.sb,
        [
          '--git',
          `file://${bare()}`,
          '--ref',
          'main',
          '--path',
          'fleet',
          '--interval',
          '3s',
          '--connect',
          h.lv.uri,
          '--host',
          h.name,
          ...LABELS[h.name]!.flatMap((l) => ['--label', l]),
        ],
        h.lv.nsenter,
      );
    }
    const applied = (name: string, rev: string) => until(async () => (await agents[name]!.status()).appliedRevision === rev, `${name} to apply ${rev}`, 60_000);
    await Promise.all(HOSTS.map((n) => applied(n, first)));
    const [h1, h2, h3] = hosts as [(typeof hosts)[number], (typeof hosts)[number], (typeof hosts)[number]];
    // Each host has exactly its objects: the shared ones everywhere, the others where selected.
    for (const h of hosts) expect(await sizeOn(h, 'base.qcow2')).toBe(8 * MiB);
    expect(existsSync(onHost(h2, 'only-h2.qcow2'))).toBe(true);
    expect(existsSync(onHost(h1, 'only-h2.qcow2')) || existsSync(onHost(h3, 'only-h2.qcow2'))).toBe(false);
    expect(existsSync(onHost(h3, 'only-h3.qcow2'))).toBe(true);
    expect(existsSync(onHost(h1, 'only-h3.qcow2')) || existsSync(onHost(h2, 'only-h3.qcow2'))).toBe(false);
    // web.yaml: h1 and h3 by the glob (and their label); h2 neither.
    expect(existsSync(onHost(h1, 'pool/web.qcow2')) && existsSync(onHost(h3, 'pool/web.qcow2'))).toBe(true);
    expect(existsSync(onHost(h2, 'pool/web.qcow2'))).toBe(false);
    const vols = async (h: (typeof hosts)[number]) => (await execa('virsh', ['-q', '-c', h.lv.uri, 'vol-list', 'local'])).stdout;
    expect(await vols(h1)).toMatch(/web\.qcow2/);
    expect(await vols(h2)).not.toMatch(/web\.qcow2/);

    // A commit to the shared file reaches all three.
    const second = await commit({ 'shared.yaml': shared('12M') }, 'grow the shared image');
    await Promise.all(HOSTS.map((n) => applied(n, second)));
    for (const h of hosts) expect(await sizeOn(h, 'base.qcow2')).toBe(12 * MiB);

    // A commit to h2's file: only h2 changes (the others apply the revision, with nothing to do).
    const third = await commit({ 'h2.yaml': forH2('16M') }, 'grow h2');
    await Promise.all(HOSTS.map((n) => applied(n, third)));
    expect(await sizeOn(h2, 'only-h2.qcow2')).toBe(16 * MiB);
    expect(existsSync(onHost(h1, 'only-h2.qcow2')) || existsSync(onHost(h3, 'only-h2.qcow2'))).toBe(false);

    // One commit that grows the shared image and breaks h3's file: h1 and h2 apply it, h3 rejects
    // it and keeps the previous revision in force (its shared image stays as it was).
    const broken = await commit({ 'shared.yaml': shared('14M'), 'h3.yaml': forH3('1 parsec') }, 'grow shared, break h3');
    await Promise.all([applied('h1', broken), applied('h2', broken)]);
    const st3 = await until(async () => {
      const s = await agents.h3!.status();
      return s.rejectedRevision?.revision === broken && s;
    }, 'h3 to reject the broken revision');
    expect(st3.appliedRevision).toBe(third);
    expect(JSON.stringify(st3.rejectedRevision)).toMatch(/h3\.yaml:\d+:\d+: images\.only-h3\.size/);
    expect(await sizeOn(h1, 'base.qcow2')).toBe(14 * MiB);
    expect(await sizeOn(h2, 'base.qcow2')).toBe(14 * MiB);
    expect(await sizeOn(h3, 'base.qcow2')).toBe(12 * MiB);
    expect((await agents.h1!.status()).rejectedRevision).toBeUndefined();

    // Every series says which host it is from.
    const metrics = await (await fetch(`${agents.h2!.url}/metrics`)).text();
    expect(metrics).toMatch(/^virt_reconcile_reconciles_total\{host="h2"\} \d+$/m);
    for (const line of metrics.split('\n').filter((l) => l && !l.startsWith('#'))) expect(line).toMatch(/host="h2"/);

    for (const a of Object.values(agents)) a.proc.kill('SIGTERM');
    for (const a of Object.values(agents)) expect(await a.exit()).toBe(0);
  });

  it('plan --host NAME -o json, off the hosts (no libvirt needed for image files), gives each host exactly its objects; validate --all-hosts checks them all', async () => {
    const dir = path.join(repo.dir, 'held-out');
    await mkdir(dir, { recursive: true });
    await writeFile(path.join(dir, 'all.yaml'), `version: 1\nimages:\n  common: { path: ${SRV}/common.qcow2, size: 1M }\n`);
    await writeFile(path.join(dir, 'web.yaml'), `version: 1\nhosts: ["hv-web-*"]\nimages:\n  site: { path: ${SRV}/site.qcow2, size: 1M }\n`);
    await writeFile(path.join(dir, 'db.yaml'), `version: 1\nhosts: [{ label: "role=db" }]\nimages:\n  data: { path: ${SRV}/data.qcow2, size: 1M }\n`);
    await writeFile(path.join(dir, 'gone.yaml'), `version: 1\nhosts: [hv-old-1]\nimages:\n  old: { path: ${SRV}/old.qcow2, size: 1M }\n`);
    // The same name in files for different hosts is fine: each host has its own.
    await writeFile(path.join(dir, 'special.yaml'), `version: 1\nhosts: [HV-SPECIAL]\nimages:\n  site: { path: ${SRV}/special-site.qcow2, size: 1M }\n`);
    const state = path.join(repo.dir, 'laptop-state');
    const plan = async (...a: string[]) => {
      const r = await cli(['plan', '-f', dir, '--state-dir', state, '-o', 'json', ...a]);
      expect(r.code, r.stderr).toBe(0);
      return (JSON.parse(r.stdout) as { host: { host: string }; actions: { id: string }[] }).actions.map((x) => x.id).sort();
    };
    expect(await plan('--host', 'hv-web-1')).toEqual(['images.common', 'images.site']);
    expect(await plan('--host', 'hv-db-1', '--label', 'role=db')).toEqual(['images.common', 'images.data']);
    expect(await plan('--host', 'hv-db-2')).toEqual(['images.common']);
    expect(await plan('--host', 'hv-special')).toEqual(['images.common', 'images.site']);
    // Nothing was made off the hosts: plan touches nothing.
    expect(existsSync(`${SRV}/common.qcow2`)).toBe(false);

    const hostsFile = path.join(repo.dir, 'hosts.yaml');
    await writeFile(hostsFile, 'hosts:\n  - hv-web-1\n  - { name: hv-db-1, labels: { role: db } }\n  - { name: hv-special }\n');
    const ok = await cli(['validate', '-f', dir, '--all-hosts', hostsFile]);
    expect(ok.code, ok.stderr).toBe(0);
    expect(ok.stdout).toMatch(/valid for hv-web-1: 2 file\(s\)/);
    expect(ok.stderr).toMatch(/warning: \S*gone\.yaml:2:8: hosts: selects none of the 3 host\(s\)/);
    expect((await cli(['validate', '-f', dir, '--all-hosts', hostsFile, '--strict'])).code).toBe(1);
    // A name declared twice for one host is an error naming that host only; another host's broken file is that host's.
    await writeFile(path.join(dir, 'twice.yaml'), `version: 1\nhosts: [hv-web-1]\nimages:\n  common: { path: ${SRV}/common2.qcow2, size: 1M }\n`);
    await writeFile(path.join(dir, 'broken.yaml'), `version: 1\nhosts: [{ label: "role=db" }]\nimages:\n  bad: { path: ${SRV}/bad.qcow2, size: 1 parsec }\n`);
    const bad = await cli(['validate', '-f', dir, '--all-hosts', hostsFile]);
    expect(bad.code).toBe(1);
    expect(bad.stderr).toMatch(/twice\.yaml:4:3: images\.common: images\.common is already declared at \S*all\.yaml:3:3; .* \(host hv-web-1\)/);
    expect(bad.stderr).toMatch(/broken\.yaml:4:\d+: images\.bad\.size: .* \(host hv-db-1\)/);
    expect(bad.stderr).toMatch(/^2 error\(s\)/m);
    // One host's view is its own: hv-special validates, hv-web-1 does not.
    expect((await cli(['validate', '-f', dir, '--host', 'hv-special'])).code).toBe(0);
  });

  it("a state directory stays its host's: a mistyped or missing --host is refused before it could prune the host's objects", async () => {
    const dir = path.join(repo.dir, 'bound');
    const img = path.join(repo.dir, 'bound-img');
    await mkdir(dir, { recursive: true });
    await writeFile(path.join(dir, 'db.yaml'), `version: 1\nhosts: [hv-db-1]\nimages:\n  data: { path: ${img}/data.qcow2, size: 1M }\n`);
    const state = path.join(repo.dir, 'bound-state');
    const run = (...a: string[]) => cli([...a, '-f', dir, '--state-dir', state]);
    expect((await run('apply', '--host', 'hv-db-1')).code).toBe(0);
    for (const args of [['--host', 'hv-db-l'], []]) {
      const r = await run('apply', '--prune', '--auto-approve', ...args);
      expect(r.code).toBe(1);
      expect(r.stderr).toMatch(/holds the state of host hv-db-1, and this run is for \S+ .*Give --host hv-db-1, or another --state-dir/);
      expect((await run('plan', '--prune', ...args)).code).toBe(1);
    }
    expect(existsSync(path.join(img, 'data.qcow2'))).toBe(true);
    expect((await run('plan', '--host', 'HV-DB-1', '--prune', '--detailed-exitcode')).code).toBe(0);
  });
});
