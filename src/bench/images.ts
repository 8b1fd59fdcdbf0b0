// `npm run bench`: N image files through the real CLI — time and processes spawned by the
// first apply, a no-op plan, a no-op apply, and a plan after one image drifted.
// Usage: npm run bench -- [--images N]
import { execFile } from 'node:child_process';
import { mkdtemp, readFile, rm, writeFile } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import path from 'node:path';
import { fileURLToPath } from 'node:url';
import { parseArgs } from 'node:util';

const CLI = path.join(path.dirname(fileURLToPath(import.meta.url)), '..', 'cli.js');

async function timed(args: string[], trace: string): Promise<{ seconds: number; spawned: number; code: number }> {
  await rm(trace, { force: true });
  const t0 = process.hrtime.bigint();
  const code = await new Promise<number>((resolve) => {
    execFile('node', [CLI, ...args], { env: { ...process.env, VIRT_RECONCILE_TRACE: trace }, maxBuffer: 64 * 1024 * 1024 }, (err) => resolve(err ? Number(err.code ?? 1) : 0));
  });
  const seconds = Number(process.hrtime.bigint() - t0) / 1e9;
  const spawned = (await readFile(trace, 'utf8').catch(() => '')).split('\n').filter(Boolean).length;
  return { seconds, spawned, code };
}

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
    const rows: [string, Awaited<ReturnType<typeof timed>>][] = [];
    rows.push([`first apply (${n} images)`, await timed(['apply', ...common], trace)]);
    rows.push(['no-op plan', await timed(['plan', ...common], trace)]);
    rows.push(['no-op apply', await timed(['apply', ...common], trace)]);
    await writeFile(yaml, `${lines.join('\n').replace(`img-0: { path: ${dir}/img/0.qcow2, format: qcow2, size: 1G }`, `img-0: { path: ${dir}/img/0.qcow2, format: qcow2, size: 2G }`)}\n`);
    rows.push(['plan after one change', await timed(['plan', ...common], trace)]);
    console.log(`virt-reconcile bench: ${n} images`);
    console.log('step                         seconds  processes  exit');
    for (const [name, r] of rows) console.log(`${name.padEnd(28)} ${r.seconds.toFixed(2).padStart(7)}  ${String(r.spawned).padStart(9)}  ${r.code}`);
  } finally {
    await rm(dir, { recursive: true, force: true });
  }
}

await main();
