// `npm run bench` (images): N image files through the real CLI — the first apply, a no-op plan
// and apply, a plan after one change — against the same qemu-img commands (read from the
// apply's own trace) run one after another by a shell script, measured in the same run
// (goal: the first apply within 1.2x of that loop).
// Usage: node dist/bench/images.js [--images N]
import { mkdir, mkdtemp, readFile, rm, writeFile } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import path from 'node:path';
import { parseArgs } from 'node:util';
import { announce, measure, measureMedian, ratio, report, summarize, table, timeCommand, type Measurement } from './measure.js';

const sh = (a: string) => `'${a.replace(/'/g, "'\\''")}'`;

/**
 * The apply's qemu-img commands, as a shell script writing into `loopDir` instead: the same
 * arguments, each image made at its final path (reconcile builds in a scratch directory beside
 * it, then renames; the loop skips that).
 */
function loopScript(trace: string, imgDir: string, loopDir: string): { script: string; commands: number; creates: number } {
  const cmds = trace
    .split('\n')
    .filter(Boolean)
    .map((l) => JSON.parse(l) as string[])
    .filter((a) => a[0] === 'qemu-img')
    .map((a) =>
      a.map((x) =>
        x
          .replace(/\/\.[^/]+\.reconcile-\d+-[0-9a-f]+\//, '/')
          .split(imgDir)
          .join(loopDir),
      ),
    );
  return { script: `set -e\n${cmds.map((a) => a.map(sh).join(' ')).join('\n')}\n`, commands: cmds.length, creates: cmds.filter((a) => a[1] === 'create').length };
}

const { values } = parseArgs({ options: { images: { type: 'string', default: '500' } } });
const n = Number(values.images);
announce('image files');
const dir = await mkdtemp(path.join(tmpdir(), 'vr-bench-'));
try {
  const lines = ['version: 1', 'images:'];
  for (let i = 0; i < n; i++) {
    const fmt = ['qcow2', 'raw', 'vhdx', 'vmdk'][i % 4];
    lines.push(`  img-${i}: { path: ${dir}/img/${i}.${fmt}, format: ${fmt}, size: ${1 + (i % 8)}G }`);
  }
  const yaml = path.join(dir, 'storage.yaml');
  await writeFile(yaml, `${lines.join('\n')}\n`);
  const common = ['-f', yaml, '--state-dir', path.join(dir, 'state')];
  const rows: [string, Measurement][] = [];
  const first = await measure(['apply', ...common], dir);
  const { script, commands, creates } = loopScript(await readFile(path.join(dir, 'trace'), 'utf8'), path.join(dir, 'img'), path.join(dir, 'loop'));
  rows.push([`first apply (${n} images)`, first]);
  rows.push(['no-op plan (median of 3)', await measureMedian(['plan', ...common], dir)]);
  rows.push(['no-op apply (median of 3)', await measureMedian(['apply', ...common], dir)]);
  await writeFile(
    yaml,
    `${lines.join('\n').replace(`img-0: { path: ${dir}/img/0.qcow2, format: qcow2, size: 1G }`, `img-0: { path: ${dir}/img/0.qcow2, format: qcow2, size: 2G }`)}\n`,
  );
  rows.push(['plan after one change', await measure(['plan', ...common], dir)]);
  report(`${n} image files (qcow2, raw, vhdx, vmdk)`, rows);

  await mkdir(path.join(dir, 'loop'));
  await writeFile(path.join(dir, 'loop.sh'), script);
  const loop = await timeCommand(['sh', path.join(dir, 'loop.sh')]);
  summarize({
    what: `first apply, ${n} image files`,
    value: `${first.seconds.toFixed(2)} s`,
    against: `same ${commands} qemu-img runs in a shell loop: ${loop.seconds.toFixed(2)} s`,
    ratio: ratio(first.seconds, loop.seconds),
    goal: '<= 1.2x the loop',
    met: first.code === 0 && loop.code === 0 && first.seconds <= 1.2 * loop.seconds,
  });
  summarize({
    what: `no-op plan, ${n} image files`,
    value: `${rows[1]![1].seconds.toFixed(2)} s, ${rows[1]![1].spawned} processes`,
    goal: 'no process',
    met: rows[1]![1].spawned === 0,
  });
  table(
    'first apply against the same qemu-img commands in a shell loop (goal: <= 1.2x)',
    ['step', 'seconds', 'qemu-img runs', 'vs loop', 'exit'],
    [
      [`reconcile apply (${n} images)`, first.seconds, String(commands), ratio(first.seconds, loop.seconds), String(first.code)],
      [`shell loop (${creates} create, ${commands - creates} other)`, loop.seconds, String(commands), undefined, String(loop.code)],
    ],
  );
} finally {
  await rm(dir, { recursive: true, force: true });
}
