// The fleet's eyes: an agent's /metrics carries its host on every series, the storage metrics
// of the guide's monitoring section (per-disk I/O of declared VMs from domstats, pool and image
// allocation), and the examples' Prometheus rules and Grafana dashboard query only metrics an
// agent really serves (checked against a scrape; with promtool where it is installed).
import { chmod, readFile } from 'node:fs/promises';
import path from 'node:path';
import { execa } from 'execa';
import { afterAll, afterEach, describe, expect, it } from 'vitest';
import { parse } from 'yaml';
import { startPrivateLibvirtd, type PrivateLibvirtd } from '../src/dev/private-libvirtd.js';
import { parseDomstats } from '../src/tools/domstats.js';
import { ROOT, sandbox, type Sandbox } from './helpers.js';
import { procs, startWatch, until } from './watch-helpers.js';

let lv: PrivateLibvirtd | undefined;
let sb: Sandbox | undefined;
afterEach(() => {
  for (const p of procs.splice(0)) if (p.exitCode === null) p.kill('SIGKILL');
});
afterAll(async () => {
  await lv?.stop();
  await sb?.cleanup();
});

const RULES = path.join(ROOT, 'examples', 'prometheus', 'virt-reconcile-alerts.yaml');
const DASHBOARD = path.join(ROOT, 'examples', 'grafana', 'virt-reconcile-fleet.json');
/** The project's metric names an expression uses (a histogram's _bucket is its base metric). */
const metricNames = (expr: string) => [...expr.matchAll(/\bvirt_reconcile_[a-z_]+/g)].map((m) => m[0].replace(/_(bucket|sum|count)$/, ''));

describe('domstats', () => {
  it('parses per-disk counters of every domain, and allocation against capacity', () => {
    const text = `Domain: 'web'
  block.count=2
  block.0.name=vda
  block.0.path=/var/lib/libvirt/images/web.qcow2
  block.0.rd.reqs=10
  block.0.rd.bytes=40960
  block.0.wr.reqs=3
  block.0.wr.bytes=12288
  block.0.fl.reqs=2
  block.0.allocation=196608
  block.0.capacity=8388608
  block.1.name=sda
  block.1.rd.reqs=0

Domain: 'off'
  block.count=0
`;
    expect(parseDomstats(text)).toEqual([
      { vm: 'web', disk: 'vda', readBytes: 40960, writeBytes: 12288, readRequests: 10, writeRequests: 3, flushRequests: 2, allocation: 196608, capacity: 8388608 },
      { vm: 'web', disk: 'sda', readBytes: 0, writeBytes: 0, readRequests: 0, writeRequests: 0, flushRequests: 0, allocation: undefined, capacity: undefined },
    ]);
  });
});

describe('fleet observability', () => {
  it('every series has the host; disk I/O of a running declared VM, image and pool allocation; the example rules and dashboard use only served metrics', {
    timeout: 120_000,
  }, async () => {
    lv = await startPrivateLibvirtd();
    sb = await sandbox('fleet-metrics', { libvirt: lv });
    await chmod(sb.dir, 0o755);
    const conf = await sb.yaml(`version: 1
pools:
  mp: { type: dir, path: $DIR/pool, capacityAlert: "99%" }
images:
  disk: { pool: mp, size: 8M }
  other: { path: $DIR/img/other.qcow2, size: 4M }
vms:
  mv: { create: { memory: 64M, vcpus: 1 }, disks: [{ image: disk }] }
`);
    const w = await startWatch(sb, ['-f', conf, '--interval', '5m', '--connect', lv.uri, '--host', 'hv-metrics-1'], lv.nsenter);
    await until(async () => (await fetch(`${w.url}/readyz`)).status === 200, 'ready').catch(async (e) => {
      console.log(w.log(), JSON.stringify(await w.status()));
      throw e;
    });
    // A paused guest is enough: QEMU has the disk open, and libvirt counts for it.
    await execa('virsh', ['-q', '-c', lv.uri, 'start', '--paused', 'mv']);
    const m = await until(async () => {
      const t = await (await fetch(`${w.url}/metrics`)).text();
      return /virt_reconcile_disk_capacity_bytes\{vm="mv",disk="vda"/.test(t) && t;
    }, 'the disk metrics of the running VM');
    await execa('virsh', ['-q', '-c', lv.uri, 'destroy', 'mv']);
    expect(m).toMatch(/^virt_reconcile_disk_capacity_bytes\{vm="mv",disk="vda",host="hv-metrics-1"\} 8388608$/m);
    expect(m).toMatch(/^virt_reconcile_disk_read_bytes_total\{vm="mv",disk="vda",host="hv-metrics-1"\} \d+$/m);
    expect(m).toMatch(/^virt_reconcile_disk_allocation_bytes\{vm="mv",disk="vda",host="hv-metrics-1"\} \d+$/m);
    expect(m).toMatch(/^virt_reconcile_image_capacity_bytes\{image="other",host="hv-metrics-1"\} 4194304$/m);
    expect(m).toMatch(/^virt_reconcile_image_allocation_bytes\{image="disk",host="hv-metrics-1"\} \d+$/m);
    expect(m).toMatch(/^virt_reconcile_pool_alert_ratio\{pool="mp",host="hv-metrics-1"\} 0\.99$/m);
    expect(m).toMatch(/^virt_reconcile_ready\{host="hv-metrics-1"\} 1$/m);
    for (const line of m.split('\n').filter((l) => l && !l.startsWith('#'))) expect(line).toMatch(/host="hv-metrics-1"/);
    const served = new Set([...m.matchAll(/^# HELP (\S+)/gm)].map((x) => x[1]!));

    // The alert rules: each well-formed, each metric it uses served by an agent.
    const rules = parse(await readFile(RULES, 'utf8')) as {
      groups: { rules: { alert: string; expr: string; labels?: { severity?: string }; annotations?: { summary?: string } }[] }[];
    };
    const alerts = rules.groups.flatMap((g) => g.rules);
    expect(alerts.map((a) => a.alert)).toEqual(
      expect.arrayContaining([
        'VirtReconcileFailing',
        'VirtReconcileRevisionStuck',
        'VirtReconcileDriftCorrectedRepeatedly',
        'VirtReconcilePoolOverAlert',
        'VirtReconcileBackupOverdue',
        'VirtReconcileBackupSuspended',
        'VirtReconcileSignatureRejected',
      ]),
    );
    for (const a of alerts) {
      expect(a.expr, a.alert).toBeTruthy();
      expect(a.labels?.severity, a.alert).toMatch(/^(warning|critical)$/);
      expect(a.annotations?.summary, a.alert).toBeTruthy();
      for (const name of metricNames(a.expr)) expect(served.has(name), `${a.alert} uses ${name}, which /metrics does not serve`).toBe(true);
    }
    const promtool = await execa('promtool', ['--version']).then(
      () => true,
      () => false,
    );
    if (promtool) expect((await execa('promtool', ['check', 'rules', RULES], { reject: false })).exitCode).toBe(0);

    // The dashboard: a host variable, and every panel's queries on served metrics.
    const dash = JSON.parse(await readFile(DASHBOARD, 'utf8')) as {
      templating: { list: { name: string; query?: unknown }[] };
      panels: { title: string; targets: { expr: string }[] }[];
    };
    expect(dash.templating.list.map((v) => v.name)).toContain('host');
    expect(dash.panels.length).toBeGreaterThanOrEqual(8);
    const used = new Set<string>();
    for (const p of dash.panels) {
      expect(p.targets.length, p.title).toBeGreaterThan(0);
      for (const t of p.targets) {
        expect(t.expr, p.title).toMatch(/host=~"\$host"/);
        for (const name of metricNames(t.expr)) {
          used.add(name);
          expect(served.has(name), `panel ${p.title} uses ${name}, which /metrics does not serve`).toBe(true);
        }
      }
    }
    // The fleet view covers the storage metrics, not only the service's own.
    for (const name of [
      'virt_reconcile_disk_write_bytes_total',
      'virt_reconcile_pool_allocation_bytes',
      'virt_reconcile_applied_revision_info',
      'virt_reconcile_revision_behind_seconds',
    ])
      expect(used.has(name), name).toBe(true);
    w.proc.kill('SIGTERM');
    expect(await w.exit()).toBe(0);
  });
});
