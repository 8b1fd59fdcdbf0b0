// Start-up cost of the CLI: `--version` and `validate` of 50 images, medians of 9 runs, next to
// `node -e 0` measured in the same run and to the budgets of issue 12 (0.1 s and 0.15 s).
import { mkdtemp, rm, writeFile } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import path from 'node:path';
import { execFileSync } from 'node:child_process';
import { announce, reconcileCommand, summarize } from './measure.js';

function median(argv: string[]): number {
  const times: number[] = [];
  for (let i = 0; i < 9; i++) {
    const t0 = process.hrtime.bigint();
    execFileSync(argv[0]!, argv.slice(1), { stdio: 'ignore' });
    times.push(Number(process.hrtime.bigint() - t0) / 1e9);
  }
  return times.sort((a, b) => a - b)[4]!;
}

const dir = await mkdtemp(path.join(tmpdir(), 'vr-bench-startup-'));
try {
  const yaml = path.join(dir, 'storage.yaml');
  await writeFile(yaml, `version: 1\nimages:\n${Array.from({ length: 50 }, (_, i) => `  img${i}: { path: ${dir}/img${i}.qcow2, size: 1G }\n`).join('')}`);
  const node = median(['node', '-e', '0']);
  announce('start-up');
  const { argv } = reconcileCommand();
  const rows: [string, number, number][] = [
    ['reconcile --version', median([...argv, '--version']), 0.1],
    ['reconcile validate (50 images)', median([...argv, 'validate', '-f', yaml]), 0.15],
  ];
  console.log(`start-up (median of 9; node -e 0: ${node.toFixed(3)} s)`);
  console.log(`${'step'.padEnd(33)} ${'seconds'.padStart(7)}  ${'budget'.padStart(6)}  ratio`);
  for (const [name, s, budget] of rows) {
    console.log(`${name.padEnd(33)} ${s.toFixed(3).padStart(7)}  ${budget.toFixed(2).padStart(6)}  ${(s / budget).toFixed(2)}`);
    summarize({ what: name, value: `${s.toFixed(3)} s`, against: `node -e 0: ${node.toFixed(3)} s`, goal: `<= ${budget} s`, met: s <= budget });
  }
} finally {
  await rm(dir, { recursive: true, force: true });
}
