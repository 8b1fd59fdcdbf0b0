// `npm run bench` (watch memory): `reconcile watch` over N volumes in M pools, driven through
// C reconcile cycles (SIGHUP: reconcile now), its resident memory read from /proc after cycle
// 50 and after the last. Goal (issue 12): no growth, the last within 10% of the 50th.
// Usage: node dist/bench/watch-memory.js [--volumes 1000] [--pools 10] [--cycles 500]
import { spawn } from 'node:child_process';
import { mkdtemp, readFile, rm, writeFile } from 'node:fs/promises';
import { createServer } from 'node:net';
import { tmpdir } from 'node:os';
import path from 'node:path';
import { parseArgs } from 'node:util';
import { startPrivateLibvirtd } from '../dev/private-libvirtd.js';
import { announce, measure, reconcileCommand, summarize, table } from './measure.js';

const { values } = parseArgs({ options: { volumes: { type: 'string', default: '1000' }, pools: { type: 'string', default: '10' }, cycles: { type: 'string', default: '500' } } });
const [n, m, cycles] = [Number(values.volumes), Number(values.pools), Number(values.cycles)];

const freePort = () =>
  new Promise<number>((resolve) => {
    const s = createServer().listen(0, '127.0.0.1', () => {
      const { port } = s.address() as { port: number };
      s.close(() => resolve(port));
    });
  });

const rssMiB = async (pid: number) => Number(/VmRSS:\s+(\d+) kB/.exec(await readFile(`/proc/${pid}/status`, 'utf8'))![1]) / 1024;

announce('watch memory');
const dir = await mkdtemp(path.join(tmpdir(), 'vr-bench-watch-'));
const lv = await startPrivateLibvirtd();
try {
  const lines = ['version: 1', 'pools:'];
  for (let j = 0; j < m; j++) lines.push(`  wp-${j}: { type: dir, path: ${dir}/pool-${j} }`);
  lines.push('images:');
  for (let i = 0; i < n; i++) lines.push(`  vol-${i}: { pool: wp-${i % m}, format: ${i % 3 ? 'qcow2' : 'raw'}, size: ${1 + (i % 4)}G }`);
  const yaml = path.join(dir, 'storage.yaml');
  await writeFile(yaml, `${lines.join('\n')}\n`);
  const common = ['-f', yaml, '--state-dir', path.join(dir, 'state'), '--connect', lv.uri];
  const first = await measure(['apply', ...common], dir);
  if (first.code !== 0) throw new Error('the first apply failed');

  const port = await freePort();
  const { argv } = reconcileCommand();
  const watch = spawn(argv[0]!, [...argv.slice(1), 'watch', ...common, '--interval', '1h', '--listen', `127.0.0.1:${port}`], { stdio: 'ignore' });
  const runs = async (): Promise<number> => {
    try {
      const text = await (await fetch(`http://127.0.0.1:${port}/metrics`)).text();
      return Number(/^virt_reconcile_reconciles_total (\d+)/m.exec(text)?.[1] ?? 0);
    } catch {
      return 0;
    }
  };
  const waitFor = async (count: number) => {
    while ((await runs()) < count) await new Promise((r) => setTimeout(r, 10));
  };
  try {
    await waitFor(1);
    const rows: (string | number)[][] = [];
    const t0 = Date.now();
    for (let c = 2; c <= cycles + 1; c++) {
      watch.kill('SIGHUP');
      await waitFor(c);
      if (c - 1 === 50 || c - 1 === cycles) rows.push([`after ${c - 1} cycles`, await rssMiB(watch.pid!)]);
    }
    const per = (Date.now() - t0) / 1000 / cycles;
    const [at50, atEnd] = [rows[0]?.[1] as number, rows.at(-1)?.[1] as number];
    const growth = (atEnd - at50) / at50;
    summarize({
      what: `watch RSS, ${cycles} cycles over ${n} volumes`,
      value: `${atEnd.toFixed(0)} MiB`,
      against: `after 50 cycles: ${at50.toFixed(0)} MiB`,
      ratio: `${(growth * 100).toFixed(1)}%`,
      goal: 'within 10%',
      met: Math.abs(growth) <= 0.1,
    });
    table(
      `reconcile watch over ${n} volumes in ${m} pools, ${cycles} cycles (${per.toFixed(2)} s each; goal: no growth, within 10% of cycle 50)`,
      ['point', 'RSS MiB'],
      [...rows, ['growth from cycle 50', `${(((atEnd - at50) / at50) * 100).toFixed(1)}%`]],
    );
  } finally {
    watch.kill('SIGTERM');
  }
} finally {
  await lv.stop();
  await rm(dir, { recursive: true, force: true });
}
