// How the benchmark runs the real CLI: the installed `reconcile` command when it is this
// checkout's (scripts/setup.sh links it), else `node dist/cli.js`. Each measurement is one
// whole process: wall time, exit code, processes it spawned (VIRT_RECONCILE_TRACE) and its
// peak memory (VIRT_RECONCILE_RUSAGE, written by the CLI as it exits).
import { execFile, execFileSync } from 'node:child_process';
import { appendFileSync, readFileSync, realpathSync } from 'node:fs';
import { readFile, rm } from 'node:fs/promises';
import path from 'node:path';
import { fileURLToPath } from 'node:url';

export const ROOT = path.resolve(path.dirname(fileURLToPath(import.meta.url)), '..', '..');
export const CLI = path.join(ROOT, 'dist', 'cli.js');

/** The command that runs `reconcile`, and how it was found. */
export function reconcileCommand(): { argv: string[]; how: string } {
  try {
    const found = execFileSync('sh', ['-c', 'command -v reconcile'], { encoding: 'utf8' }).trim();
    if (found && realpathSync(found) === realpathSync(CLI)) return { argv: [found], how: `installed command ${found}` };
  } catch {
    // not on the PATH
  }
  return { argv: ['node', CLI], how: 'node dist/cli.js (`reconcile` is not installed from this checkout: run scripts/setup.sh or npm link)' };
}

/** Each part says first which command it times. */
export function announce(part: string): void {
  console.log(`\n== ${part}: reconcile is run as ${reconcileCommand().how}`);
}

export interface Measurement {
  seconds: number;
  spawned: number;
  code: number;
  /** peak resident memory of the reconcile process, MiB */
  rssMiB?: number;
}

/** Wall time of a command (not reconcile): the limit and the peer. */
export async function timeCommand(argv: string[], env: Record<string, string> = {}): Promise<Measurement> {
  const t0 = process.hrtime.bigint();
  const code = await new Promise<number>((resolve) => {
    execFile(argv[0]!, argv.slice(1), { env: { ...process.env, ...env }, maxBuffer: 256 * 1024 * 1024 }, (err, _stdout, stderr) => {
      if (err) process.stderr.write(`${argv.slice(0, 3).join(' ')} failed: ${String(stderr).split('\n').slice(0, 10).join('\n')}\n`);
      resolve(err ? Number(err.code ?? 1) : 0);
    });
  });
  return { seconds: Number(process.hrtime.bigint() - t0) / 1e9, spawned: 1, code };
}

export async function measure(args: string[], scratch: string): Promise<Measurement> {
  const trace = path.join(scratch, 'trace');
  const rusage = path.join(scratch, 'rusage.json');
  await rm(trace, { force: true });
  await rm(rusage, { force: true });
  const { argv } = reconcileCommand();
  const t0 = process.hrtime.bigint();
  const code = await new Promise<number>((resolve) => {
    execFile(
      argv[0]!,
      [...argv.slice(1), ...args],
      { env: { ...process.env, VIRT_RECONCILE_TRACE: trace, VIRT_RECONCILE_RUSAGE: rusage }, maxBuffer: 256 * 1024 * 1024 },
      (err, stdout, stderr) => {
        // A failing step shows why, or its numbers mean nothing.
        if (err)
          process.stderr.write(
            `${args[0]} failed:\n${[
              ...String(stdout)
                .split('\n')
                .filter((l) => /FAILED|fail/.test(l))
                .slice(0, 10),
              ...String(stderr).split('\n').slice(0, 10),
            ].join('\n')}\n`,
          );
        resolve(err ? Number(err.code ?? 1) : 0);
      },
    );
  });
  const seconds = Number(process.hrtime.bigint() - t0) / 1e9;
  const spawned = (await readFile(trace, 'utf8').catch(() => '')).split('\n').filter(Boolean).length;
  let rssMiB: number | undefined;
  try {
    rssMiB = (JSON.parse(readFileSync(rusage, 'utf8')) as { maxRssKiB: number }).maxRssKiB / 1024;
  } catch {
    // the process died before it could say
  }
  return { seconds, spawned, code, rssMiB };
}

/**
 * A step that changes nothing (a no-op plan or apply), run three times: the median, as the
 * issue's own figures are whole-process medians (a single run on a busy 2-core host can be off
 * by a tenth of a second either way).
 */
export async function measureMedian(args: string[], scratch: string): Promise<Measurement> {
  const runs: Measurement[] = [];
  for (let i = 0; i < 3; i++) runs.push(await measure(args, scratch));
  return runs.sort((a, b) => a.seconds - b.seconds)[1]!;
}

/** A table: the first column left-aligned, the others right-aligned; blank cells as "-". */
export function table(title: string, head: string[], rows: (string | number | undefined)[][]): void {
  const cells = rows.map((r) => r.map((c) => (c === undefined ? '-' : typeof c === 'number' ? c.toFixed(2) : c)));
  const widths = head.map((h, i) => Math.max(h.length, ...cells.map((r) => (r[i] ?? '').length)));
  const line = (r: string[]) => r.map((c, i) => (i === 0 ? c.padEnd(widths[i]!) : c.padStart(widths[i]!))).join('  ');
  console.log(`\n${title}`);
  console.log(line(head));
  for (const r of cells) console.log(line(r));
}

/** "0.41×" style ratio, or undefined when either side is missing. */
export function ratio(a: number | undefined, b: number | undefined): string | undefined {
  return a !== undefined && b !== undefined && b > 0 ? `${(a / b).toFixed(2)}x` : undefined;
}

export function report(title: string, rows: [string, Measurement][]): void {
  table(
    title,
    ['step', 'seconds', 'processes', 'peak MiB', 'exit'],
    rows.map(([name, r]) => [name, r.seconds, String(r.spawned), r.rssMiB?.toFixed(0), String(r.code)]),
  );
}

/**
 * One line of the summary `npm run bench` prints at its end (bench/summary.ts): each goal of
 * issue 12 with what this run measured. Written to VIRT_RECONCILE_BENCH_SUMMARY when set.
 */
export interface SummaryRow {
  what: string;
  /** what reconcile measured, with its unit */
  value: string;
  /** what it is compared with (the limit, Ansible, a budget), with its value */
  against?: string;
  ratio?: string;
  goal: string;
  met?: boolean;
}

export function summarize(row: SummaryRow): void {
  const file = process.env.VIRT_RECONCILE_BENCH_SUMMARY;
  if (file) appendFileSync(file, `${JSON.stringify(row)}\n`);
}
