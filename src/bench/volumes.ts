// `npm run bench` (second part): N volumes in M dir pools in a private libvirtd — time and
// processes spawned by the first apply, a no-op plan, a no-op apply and a plan after drift.
// Usage: node dist/bench/volumes.js [--volumes 1000] [--pools 10]
import { mkdtemp, rm, writeFile } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import path from 'node:path';
import { parseArgs } from 'node:util';
import { execa } from 'execa';
import { startPrivateLibvirtd } from '../dev/private-libvirtd.js';
import { measure, report, type Measurement } from './measure.js';

async function main(): Promise<void> {
  const { values } = parseArgs({ options: { volumes: { type: 'string', default: '1000' }, pools: { type: 'string', default: '10' } } });
  const n = Number(values.volumes);
  const m = Number(values.pools);
  const dir = await mkdtemp(path.join(tmpdir(), 'vr-bench-vol-'));
  const lv = await startPrivateLibvirtd();
  try {
    const lines = ['version: 1', 'pools:'];
    for (let j = 0; j < m; j++) lines.push(`  pool-${j}: { type: dir, path: ${dir}/pool-${j} }`);
    lines.push('images:');
    for (let i = 0; i < n; i++) lines.push(`  vol-${i}: { pool: pool-${i % m}, format: ${i % 3 ? 'qcow2' : 'raw'}, size: ${1 + (i % 4)}G }`);
    const yaml = path.join(dir, 'storage.yaml');
    await writeFile(yaml, `${lines.join('\n')}\n`);
    const trace = path.join(dir, 'trace');
    const common = ['-f', yaml, '--state-dir', path.join(dir, 'state'), '--connect', lv.uri];
    const rows: [string, Measurement][] = [];
    rows.push([`first apply (${n} volumes, ${m} pools)`, await measure(['apply', ...common], trace)]);
    rows.push(['no-op plan', await measure(['plan', ...common], trace)]);
    rows.push(['no-op apply', await measure(['apply', ...common], trace)]);
    await execa('virsh', ['-q', '-c', lv.uri, 'vol-delete', '--pool', 'pool-0', 'vol-0.img']);
    rows.push(['plan after one volume deleted', await measure(['plan', ...common], trace)]);
    rows.push(['apply healing it', await measure(['apply', ...common], trace)]);
    report(`volumes: ${n} volumes in ${m} dir pools (private libvirtd)`, rows);
  } finally {
    await lv.stop();
    await rm(dir, { recursive: true, force: true });
  }
}

await main();
