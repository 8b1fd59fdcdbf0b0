// The one place processes are spawned: argument arrays, LC_ALL=C, and an optional
// trace (VIRT_RECONCILE_TRACE=FILE) that tests and the benchmark read to count spawns.
import { randomBytes } from 'node:crypto';
import { appendFileSync } from 'node:fs';
import { readFile } from 'node:fs/promises';
import { execa } from 'execa';
import { redact } from './redact.js';

export interface RunResult {
  stdout: string;
  stderr: string;
}

export class CommandError extends Error {
  /** the tool's output, with any secret value this process read blanked out (see redact.ts) */
  readonly stderr: string;
  readonly stdout: string;
  constructor(
    readonly command: string[],
    stderr: string,
    readonly exitCode: number | undefined,
    stdout = '',
    /** stopped through its cancel signal (shutting down), not failed */
    readonly cancelled = false,
  ) {
    super(
      cancelled
        ? `${command[0]} ${command[1] ?? ''} cancelled (shutting down)`
        : `${command[0]} ${command[1] ?? ''} failed${exitCode !== undefined ? ` (exit ${exitCode})` : ''}: ${firstLines(redact(stderr)) || 'no error output'}`,
    );
    this.name = 'CommandError';
    this.stderr = redact(stderr);
    this.stdout = redact(stdout);
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
 * A command killed by SIGINT: reconcile never sends one (it cancels with SIGTERM). A Ctrl-C at
 * the terminal goes to reconcile's process group, and a command being spawned at that very
 * moment is still in it until it makes a group of its own: it holds the signal pending and dies
 * of it just before exec, having run nothing. Such a command is run again, once.
 */
/**
 * Under load (a full test suite on two cores, say) qemu's "Unable to get accurate CPU usage"
 * comes many times running: up to 20 more tries, 0.2 s apart growing to 1 s, about 18 s in all.
 */
export const TRANSIENT_RETRIES = 20;
export const transientDelay = (attempt: number) => Math.min(200 * (attempt + 1), 1000);

const spawnedDuringCtrlC = (r: { signal?: string }, attempt: number) => r.signal === 'SIGINT' && attempt === 0;

/**
 * Runs a command. `signal`: aborting it terminates the command (SIGTERM, SIGKILL 5 s later);
 * given only for work whose interruption loses nothing (a build in private scratch space).
 */
export async function run(
  cmd: string,
  args: string[],
  opts: { input?: string | Uint8Array; retries?: number; signal?: AbortSignal; env?: Record<string, string> } = {},
): Promise<RunResult> {
  const argv = [cmd, ...args];
  const retries = opts.retries ?? TRANSIENT_RETRIES;
  for (let attempt = 0; ; attempt++) {
    trace(argv);
    const r = await execa(cmd, args, {
      env: { ...opts.env, LC_ALL: 'C' },
      reject: false,
      // No signal-exit handlers: on SIGTERM the watch service lets the command in flight
      // finish (a half-converted image is worse than a late exit), and signal-exit would
      // otherwise re-raise the signal and kill the process mid-action.
      cleanup: false,
      // In a process group of its own, as every command reconcile runs: a Ctrl-C at the
      // terminal reaches only reconcile, which decides what stops (a build in scratch is
      // cancelled through `signal`; everything else in flight finishes).
      detached: true,
      stdin: opts.input === undefined ? 'ignore' : 'pipe',
      input: opts.input,
      stripFinalNewline: false,
      ...(opts.signal ? { cancelSignal: opts.signal } : {}),
    });
    if (r.isCanceled) throw new CommandError(argv, String(r.stderr), r.exitCode, String(r.stdout), true);
    if (r.exitCode === 0 && !r.failed) return { stdout: String(r.stdout), stderr: String(r.stderr) };
    if (spawnedDuringCtrlC(r, attempt)) continue;
    const stderr = String(r.stderr || r.message);
    if (attempt < retries && TRANSIENT.some((t) => stderr.includes(t))) {
      // A moment later the CPU-time reading is usually fine again (0.2 s, 0.4 s, …).
      await new Promise((r) => setTimeout(r, transientDelay(attempt)));
      continue;
    }
    throw new CommandError(argv, stderr, r.exitCode, String(r.stdout));
  }
}

// A single argument may not exceed 128 KiB (Linux MAX_ARG_STRLEN, in bytes); scripts stay below it.
const MAX_SCRIPT_BYTES = 100_000;

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
    for (; i < commands.length; i++) {
      const line = `${commands[i]!.map(shellQuote).join(' ')} </dev/null; echo "@@${tag}:$?@@"; echo "@@${tag}@@" >&2`;
      const bytes = Buffer.byteLength(line) + 1;
      if (lines.length && size + bytes > MAX_SCRIPT_BYTES) break;
      lines.push(line);
      size += bytes;
      trace(commands[i]!);
    }
    // The shell is a process of ours too; its script is long, so the trace names its size.
    trace(['sh', '-c', `(${lines.length} commands)`]);
    // In a process group of its own: a Ctrl-C at the terminal reaches only reconcile, and the
    // group's quick commands finish.
    const sh = () => execa('sh', ['-c', lines.join('\n')], { env: { LC_ALL: 'C' }, reject: false, cleanup: false, stdin: 'ignore', stripFinalNewline: false, detached: true });
    let r = await sh();
    if (spawnedDuringCtrlC(r, 0)) r = await sh();
    const parts = String(r.stdout).split(new RegExp(`@@${tag}:(\\d+)@@\n`));
    const errs = String(r.stderr).split(`@@${tag}@@\n`);
    // parts: output, code, output, code, ..., trailing; errs: one per command, trailing
    if (parts.length !== lines.length * 2 + 1 || errs.length !== lines.length + 1) {
      // Without the script itself, which can be long: its commands are in the trace.
      throw new CommandError(
        ['sh', '-c', `(${lines.length} commands)`],
        r.signal ? `stopped by ${r.signal}` : String(r.stderr).split(`@@${tag}@@\n`).join('') || 'no error output',
        r.exitCode,
      );
    }
    for (let k = 0; k < lines.length; k++) out.push({ stdout: parts[k * 2]!, code: Number(parts[k * 2 + 1]), stderr: errs[k]! });
  }
  return out;
}

/** A command fed its input line by line while it runs (an interactive tool driven step by step). */
export interface Session {
  write(text: string): void;
  /** no more input: the command ends once it has read what it was given */
  end(): void;
  exited: Promise<{ code: number | undefined; stderr: string }>;
}

/**
 * Starts a command that reads its input as it comes, its error stream handed over as it
 * arrives (its output is not kept). In a process group of its own, so a Ctrl-C at the terminal
 * reaches only reconcile, which decides what stops; and if reconcile is killed, the command
 * sees its input end and stops after the step it is in.
 */
export function session(cmd: string, args: string[], onStderr: (chunk: string) => void, /** what its input will be, for the trace */ input: string): Session {
  trace([cmd, ...args, `(${input})`]);
  // What it was given so far: a command that died of a Ctrl-C during its spawn read none of
  // it, and its second start is given all of it.
  const given: string[] = [];
  let ended = false;
  const start = () => {
    const sub = execa(cmd, args, { env: { LC_ALL: 'C' }, reject: false, cleanup: false, stdin: 'pipe', stdout: 'ignore', detached: true, stripFinalNewline: false });
    sub.stderr?.on('data', (d: Buffer) => onStderr(d.toString()));
    // Writing to a command that has already exited: its exit says why, not an EPIPE.
    sub.stdin?.on('error', () => undefined);
    return sub;
  };
  let sub = start();
  const exited = sub.then(async (r) => {
    // Had it read anything, it would have said so (every step ends with a marker on stderr).
    if (!spawnedDuringCtrlC(r, 0) || String(r.stderr) !== '') return r;
    sub = start();
    for (const text of given) sub.stdin?.write(text);
    if (ended) sub.stdin?.end();
    return sub;
  });
  return {
    write: (text) => {
      given.push(text);
      sub.stdin?.write(text);
    },
    end: () => {
      ended = true;
      sub.stdin?.end();
    },
    exited: exited.then((r) => ({ code: r.exitCode, stderr: String(r.stderr) })),
  };
}

/**
 * A long-lived command whose output is read line by line as it comes (an event stream), in a
 * process group of its own; stopped through `signal`. Resolves when it exits, with its code
 * and the end of its error output.
 */
export async function streamLines(cmd: string, args: string[], onLine: (line: string) => void, o: { signal: AbortSignal }): Promise<{ code?: number; stderr: string }> {
  trace([cmd, ...args]);
  const sub = execa(cmd, args, { env: { LC_ALL: 'C' }, reject: false, cleanup: false, detached: true, stdin: 'ignore', cancelSignal: o.signal, buffer: { stdout: false } });
  let rest = '';
  sub.stdout?.on('data', (d: Buffer) => {
    const lines = (rest + d.toString()).split('\n');
    rest = lines.pop()!;
    for (const l of lines) if (l.trim()) onLine(l);
  });
  const r = await sub;
  return { code: r.exitCode, stderr: String(r.stderr ?? '').slice(-500) };
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

/**
 * Long work whose progress is shown while it runs: `onStdout` gets the output as it comes
 * (qemu-img -p); with `inputFile` (read on standard input) `onInput` is told how far the
 * command has read into it, from /proc (as `pv -d` does), once a second. `outputFile`: standard
 * output written there. Cancelled through `signal`, like run().
 */
export async function runLong(
  cmd: string,
  args: string[],
  o: { signal?: AbortSignal; onStdout?: (chunk: string) => void; inputFile?: string; outputFile?: string; onInput?: (offset: number) => void },
): Promise<RunResult> {
  const argv = [cmd, ...args];
  trace(argv);
  const sub = execa(cmd, args, {
    env: { LC_ALL: 'C' },
    reject: false,
    cleanup: false,
    detached: true,
    stripFinalNewline: false,
    ...(o.inputFile ? { inputFile: o.inputFile } : { stdin: 'ignore' as const }),
    ...(o.outputFile ? { stdout: { file: o.outputFile } } : {}),
    // Output that goes to a file or a callback is not kept too: a decompressed image is
    // gigabytes, and execa would otherwise buffer it (and fail past its maxBuffer).
    ...(o.outputFile || o.onStdout ? { buffer: { stdout: false } } : {}),
    ...(o.signal ? { cancelSignal: o.signal } : {}),
  });
  if (o.onStdout) sub.stdout?.on('data', (d: Buffer) => o.onStdout!(d.toString()));
  let timer: NodeJS.Timeout | undefined;
  if (o.onInput && sub.pid) {
    const fdinfo = `/proc/${sub.pid}/fdinfo/0`;
    timer = setInterval(() => {
      readFile(fdinfo, 'utf8').then(
        (t) => {
          const pos = /^pos:\s+(\d+)/m.exec(t)?.[1];
          if (pos) o.onInput!(Number(pos));
        },
        () => undefined,
      );
    }, 1000);
  }
  try {
    const r = await sub;
    if (r.isCanceled) throw new CommandError(argv, String(r.stderr), r.exitCode, '', true);
    if (r.exitCode === 0 && !r.failed) return { stdout: o.outputFile || o.onStdout ? '' : String(r.stdout), stderr: String(r.stderr) };
    throw new CommandError(argv, String(r.stderr || r.message), r.exitCode);
  } finally {
    clearInterval(timer);
  }
}
