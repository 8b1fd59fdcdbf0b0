// The one place processes are spawned: argument arrays, LC_ALL=C, and an optional
// trace (VIRT_RECONCILE_TRACE=FILE) that tests and the benchmark read to count spawns.
import { randomBytes } from 'node:crypto';
import { appendFileSync } from 'node:fs';
import { execa } from 'execa';

export interface RunResult {
  stdout: string;
  stderr: string;
}

export class CommandError extends Error {
  constructor(
    readonly command: string[],
    readonly stderr: string,
    readonly exitCode: number | undefined,
    readonly stdout = '',
    /** stopped through its cancel signal (shutting down), not failed */
    readonly cancelled = false,
  ) {
    super(
      cancelled
        ? `${command[0]} ${command[1] ?? ''} cancelled (shutting down)`
        : `${command[0]} ${command[1] ?? ''} failed${exitCode !== undefined ? ` (exit ${exitCode})` : ''}: ${firstLines(stderr) || 'no error output'}`,
    );
    this.name = 'CommandError';
  }
}

function firstLines(text: string): string {
  return text.trim().split('\n').slice(0, 3).join(' / ');
}

/** Counts (and, with VIRT_RECONCILE_TRACE, logs) a spawn made outside run(). */
export function traceSpawn(argv: string[]): void {
  trace(argv);
}

function trace(argv: string[]): void {
  const file = process.env.VIRT_RECONCILE_TRACE;
  if (file) appendFileSync(file, `${JSON.stringify(argv)}\n`);
}

// qemu's LUKS key derivation benchmarks the CPU and, on some virtual machines, cannot
// read CPU time reliably. The failure is transient; this exact message is safe to retry.
const TRANSIENT = ['Unable to get accurate CPU usage'];

/**
 * Runs a command. `signal`: aborting it terminates the command (SIGTERM, SIGKILL 5 s later);
 * given only for work whose interruption loses nothing (a build in private scratch space).
 */
export async function run(
  cmd: string,
  args: string[],
  opts: { input?: string; retries?: number; signal?: AbortSignal /** the error stream as it arrives */; onStderr?: (chunk: string) => void } = {},
): Promise<RunResult> {
  const argv = [cmd, ...args];
  const retries = opts.retries ?? 4;
  for (let attempt = 0; ; attempt++) {
    trace(argv);
    const sub = execa(cmd, args, {
      env: { LC_ALL: 'C' },
      reject: false,
      // No signal-exit handlers: on SIGTERM the watch service lets the command in flight
      // finish (a half-converted image is worse than a late exit), and signal-exit would
      // otherwise re-raise the signal and kill the process mid-action.
      cleanup: false,
      stdin: opts.input === undefined ? 'ignore' : 'pipe',
      input: opts.input,
      stripFinalNewline: false,
      ...(opts.signal ? { cancelSignal: opts.signal } : {}),
    });
    const onStderr = opts.onStderr;
    if (onStderr) sub.stderr?.on('data', (d: Buffer) => onStderr(d.toString()));
    const r = await sub;
    if (r.isCanceled) throw new CommandError(argv, String(r.stderr), r.exitCode, String(r.stdout), true);
    if (r.exitCode === 0 && !r.failed) return { stdout: String(r.stdout), stderr: String(r.stderr) };
    const stderr = String(r.stderr || r.message);
    if (attempt < retries && TRANSIENT.some((t) => stderr.includes(t))) continue;
    throw new CommandError(argv, stderr, r.exitCode, String(r.stdout));
  }
}

// A single argument may not exceed 128 KiB (Linux MAX_ARG_STRLEN); scripts stay below it.
const MAX_SCRIPT_CHARS = 100_000;

const shellQuote = (a: string) => `'${a.replace(/'/g, "'\\''")}'`;

/**
 * Runs many short, independent commands one after another in one shell process: each one's
 * exit code, output and error output, told apart by markers on both streams (a warning on
 * stderr never mixes into a JSON report on stdout). Spawning from a
 * small shell costs a fraction of spawning from this (large) process, so hundreds of quick
 * qemu-img runs go this way. Each command is traced as a process of its own.
 * Not for secrets (the script is one argument, visible in ps) nor long work (no cancel).
 */
export async function runEach(commands: string[][]): Promise<{ code: number; stdout: string; stderr: string }[]> {
  const out: { code: number; stdout: string; stderr: string }[] = [];
  let i = 0;
  while (i < commands.length) {
    const tag = randomBytes(6).toString('hex');
    const lines: string[] = [];
    let size = 0;
    for (; i < commands.length && (lines.length === 0 || size < MAX_SCRIPT_CHARS); i++) {
      const line = `${commands[i]!.map(shellQuote).join(' ')} </dev/null; echo "@@${tag}:$?@@"; echo "@@${tag}@@" >&2`;
      lines.push(line);
      size += line.length + 1;
      trace(commands[i]!);
    }
    // The shell is a process of ours too; its script is long, so the trace names its size.
    trace(['sh', '-c', `(${lines.length} commands)`]);
    const r = await execa('sh', ['-c', lines.join('\n')], { env: { LC_ALL: 'C' }, reject: false, cleanup: false, stdin: 'ignore', stripFinalNewline: false });
    const parts = String(r.stdout).split(new RegExp(`@@${tag}:(\\d+)@@\n`));
    const errs = String(r.stderr).split(`@@${tag}@@\n`);
    // parts: output, code, output, code, ..., trailing; errs: one per command, trailing
    if (parts.length !== lines.length * 2 + 1 || errs.length !== lines.length + 1) {
      throw new CommandError(['sh', '-c', `${lines.length} commands`], String(r.stderr || r.message), r.exitCode, String(r.stdout));
    }
    for (let k = 0; k < lines.length; k++) out.push({ stdout: parts[k * 2]!, code: Number(parts[k * 2 + 1]), stderr: errs[k]! });
  }
  return out;
}

/** Whether a process exists (EPERM: it does, owned by someone else). */
export function processAlive(pid: number): boolean {
  try {
    process.kill(pid, 0);
    return true;
  } catch (e) {
    return (e as NodeJS.ErrnoException).code === 'EPERM';
  }
}
