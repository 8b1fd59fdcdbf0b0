// `npm run bench`: N image files through the real CLI — time and processes spawned by the
// first apply, a no-op plan, a no-op apply, and a plan after one image drifted.
// Usage: npm run bench -- [--images N]
import { mkdtemp, rm, writeFile } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import path from 'node:path';
import { parseArgs } from 'node:util';
import { measure, report, type Measurement } from './measure.js';

async function main(): Promise<void> {
  const { values } = parseArgs({ options: { images: { type: 'string', default: '500' } } });
  const n = Number(values.images);
  const dir = await mkdtemp(path.join(tmpdir(), 'vr-bench-'));
  try {
    const lines = ['version: 1', 'images:'];
    for (let i = 0; i < n; i++) {
      const fmt = ['qcow2', 'raw', 'vhdx', 'vmdk'][i % 4];
      lines.push(`  img-${i}: { path: ${dir}/img/${i}.${fmt}, format: ${fmt}, size: ${1 + (i % 8)}G }`);
    }
    const yaml = path.join(dir, 'storage.yaml');
    await writeFile(yaml, `${lines.join('\n')}\n`);
    const trace = path.join(dir, 'trace');
    const common = ['-f', yaml, '--state-dir', path.join(dir, 'state')];
    const rows: [string, Measurement][] = [];
    rows.push([`first apply (${n} images)`, await measure(['apply', ...common], trace)]);
    rows.push(['no-op plan', await measure(['plan', ...common], trace)]);
    rows.push(['no-op apply', await measure(['apply', ...common], trace)]);
    await writeFile(
      yaml,
      `${lines.join('\n').replace(`img-0: { path: ${dir}/img/0.qcow2, format: qcow2, size: 1G }`, `img-0: { path: ${dir}/img/0.qcow2, format: qcow2, size: 2G }`)}\n`,
    );
    rows.push(['plan after one change', await measure(['plan', ...common], trace)]);
    report(`images: ${n} image files`, rows);
  } finally {
    await rm(dir, { recursive: true, force: true });
  }
}

await main();
