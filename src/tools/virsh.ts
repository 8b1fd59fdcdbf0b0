// virsh, the one way this project talks to libvirt. Reads are batched: many commands in
// one virsh process, their outputs told apart by echo markers. Writes are single commands
// so that each failure is reported against the object it concerns.
import { randomBytes } from 'node:crypto';
import { CommandError, run, session } from './exec.js';

export interface Virsh {
  uri: string;
  /** Runs one command; throws CommandError with virsh's message on failure. */
  exec(args: string[], opts?: { input?: string | Uint8Array; signal?: AbortSignal }): Promise<string>;
  /**
   * Runs many read-only commands in as few processes as the argument-length limit allows.
   * Returns each command's stdout; a command that failed because its object does not exist
   * (or its pool is not active) yields undefined. Any other failure throws.
   */
  batch(commands: string[][]): Promise<(string | undefined)[]>;
  /**
   * Runs a short sequence of commands in one process where each depends on the one before;
   * any failure throws (virsh reports the first error first). Returns each command's output.
   */
  sequence(commands: string[][]): Promise<string[]>;
  /**
   * Runs steps one at a time in one virsh process (its interactive mode, each step written to
   * its input only once `before(i)` has resolved true — so what must be on disk before a step,
   * such as an intent, is), calling `after(i, errors)` as each ends (a marker on virsh's
   * unbuffered error stream). `before` resolving false stops there (shutting down). Returns
   * each step's error lines; undefined for steps not run.
   */
  stepwise(
    steps: string[][][],
    hooks: { before: (index: number) => Promise<boolean>; after: (index: number, errors: string[]) => Promise<void> },
  ): Promise<(string[] | undefined)[]>;
  /**
   * Runs many independent steps (each a few commands) in one process, going on after a
   * failed step: each step's output and its own error lines, told apart by markers on both
   * streams. Throws only if the process itself failed (no connection, killed).
   */
  each(steps: string[][][]): Promise<{ stdout: string; errors: string[] }[]>;
}

// A single argument may not exceed 128 KiB (Linux MAX_ARG_STRLEN, in bytes); stay below it.
const MAX_BATCH_BYTES = 100_000;

// Failures that mean "absent", not "broken".
const ABSENT = [
  /Storage pool not found/,
  /Storage volume not found/,
  /(storage )?pool '[^']*' is not active/,
  /Domain not found/,
  /failed to get (pool|vol|domain)/,
  /Failed to list volumes/,
  /Secret not found/,
  /failed to get secret/,
];

/**
 * The failures in a batch's error output that are not "absent". Only `error:` lines count:
 * virsh also prints warnings there (on a terminal without polkit: "Authorization not
 * available. Check if polkit service is running…") and still succeeds.
 */
export function unexpectedErrors(stderr: string): string[] {
  return stderr.split('\n').filter((l) => l.startsWith('error:') && !ABSENT.some((r) => r.test(l)));
}

/** A connection failure said the way a user can act on it. */
function connectionHelp(uri: string, stderr: string): string | undefined {
  if (!/failed to connect to the hypervisor|Failed to connect socket/.test(stderr)) return undefined;
  const why = errorLines(stderr).slice(1, 2).join('') || 'no answer';
  return `cannot connect to libvirt at ${uri} (${why}). Is libvirtd running (without systemd: virtlogd -d; libvirtd -d), and is the connection right (--connect, or connection: in the YAML)?`;
}

/** virsh's error lines in some error output, without their "error: " prefix. */
function errorLines(text: string): string[] {
  return text
    .split('\n')
    .filter((l) => l.startsWith('error:'))
    .map((l) => l.replace(/^error:\s*/, ''));
}

/** virsh's own command-line syntax: single quotes keep everything literal. */
export function quote(arg: string): string {
  if (/^[A-Za-z0-9_./:=@%+,-]+$/.test(arg)) return arg;
  if (!arg.includes("'")) return `'${arg}'`;
  return `"${arg.replace(/(["\\])/g, '\\$1')}"`;
}

export function connect(uri: string): Virsh {
  const base = ['-q', '-c', uri];
  /**
   * Runs a script of commands in one virsh process, ended by a marker that proves it ran to its
   * end even if its last command failed (virsh exits non-zero then); throws unless it did.
   */
  const runToEnd = async (script: string, tag: string, incomplete: (stderr: string) => string): Promise<{ stdout: string; stderr: string }> => {
    let stdout = '';
    let stderr = '';
    try {
      ({ stdout, stderr } = await run('virsh', [...base, `${script} ; echo @@${tag}:end@@`]));
    } catch (e) {
      stderr = (e as { stderr?: string }).stderr ?? String(e);
      stdout = (e as { stdout?: string }).stdout ?? '';
    }
    if (!stdout.includes(`@@${tag}:end@@`)) throw new Error(connectionHelp(uri, stderr) ?? incomplete(stderr));
    return { stdout, stderr };
  };
  return {
    uri,
    exec: async (args, opts) => {
      try {
        return (await run('virsh', [...base, ...args], opts)).stdout;
      } catch (e) {
        // The failure is in virsh's error lines; its warnings (polkit on a terminal) would hide it.
        if (!(e instanceof CommandError) || e.cancelled) throw e;
        const errors = e.stderr.split('\n').filter((l) => l.startsWith('error:'));
        throw new CommandError(e.command, errors.length ? errors.join('\n') : e.stderr, e.exitCode, e.stdout);
      }
    },
    sequence: async (commands) => {
      const tag = randomBytes(6).toString('hex');
      const script = commands.map((c, i) => `${c.map(quote).join(' ')} ; echo @@${tag}:${i}@@`).join(' ; ');
      const { stdout, stderr } = await run('virsh', [...base, script]);
      const errors = stderr.split('\n').filter((l) => l.startsWith('error:'));
      if (errors.length || !stdout.includes(`@@${tag}:${commands.length - 1}@@`)) {
        throw new Error(`virsh ${commands[0]?.[0] ?? ''} failed: ${errors.slice(0, 3).join(' / ') || 'incomplete output'}`);
      }
      return stdout.split(new RegExp(`@@${tag}:\\d+@@`)).slice(0, commands.length);
    },
    stepwise: async (steps, hooks) => {
      // Its input is read line by line: an argument holding a line break would end a command early.
      const broken = steps.flat(2).find((a) => /[\n\r]/.test(a));
      if (broken !== undefined) throw new Error(`cannot pass ${JSON.stringify(broken)} to virsh's input: it holds a line break (a state directory or path with one?)`);
      const tag = randomBytes(6).toString('hex');
      const marker = new RegExp(`(?:error: )?@@${tag}:\\d+@@\n`);
      let pending = '';
      let ended: ((errors: string[]) => void) | undefined;
      const s = session(
        'virsh',
        base,
        (chunk) => {
          pending += chunk;
          for (let m = marker.exec(pending); m; m = marker.exec(pending)) {
            const errors = errorLines(pending.slice(0, m.index));
            pending = pending.slice(m.index + m[0].length);
            ended?.(errors);
            ended = undefined;
          }
        },
        `${steps.length} steps on its input: ${[...new Set(steps.map((st) => st[0]?.[0]))].join(', ')}`,
      );
      const results: (string[] | undefined)[] = steps.map(() => undefined);
      const gone = s.exited.then(({ stderr }) => {
        throw new Error(
          connectionHelp(uri, stderr) ??
            `virsh stopped: ${
              errorLines(stderr)
                .filter((l) => !l.includes(`@@${tag}:`))
                .slice(0, 3)
                .join(' / ') || 'no error output'
            }`,
        );
      });
      gone.catch(() => undefined);
      try {
        for (let i = 0; i < steps.length; i++) {
          if (!(await hooks.before(i))) break;
          const done = new Promise<string[]>((resolve) => {
            ended = resolve;
          });
          s.write(`${[...steps[i]!.map((c) => c.map(quote).join(' ')), `echo --err @@${tag}:${i}@@`].join(' ; ')}\n`);
          results[i] = await Promise.race([done, gone]);
          await hooks.after(i, results[i]!);
        }
      } finally {
        s.end();
      }
      await s.exited;
      return results;
    },
    each: async function each(steps): Promise<{ stdout: string; errors: string[] }[]> {
      const tag = randomBytes(6).toString('hex');
      const script = steps.map((cmds, i) => [...cmds.map((c) => c.map(quote).join(' ')), `echo --err @@${tag}:${i}@@`, `echo @@${tag}:${i}@@`].join(' ; ')).join(' ; ');
      if (Buffer.byteLength(script) > MAX_BATCH_BYTES && steps.length > 1) {
        const half = Math.ceil(steps.length / 2);
        return [...(await each(steps.slice(0, half))), ...(await each(steps.slice(half)))];
      }
      // virsh writes `echo --err` as an error line: "error: @@…@@".
      const split = (stderr: string) => stderr.split(new RegExp(`(?:error: )?@@${tag}:\\d+@@\n?`));
      const { stdout, stderr } = await runToEnd(script, tag, (e) => `virsh did not complete: ${errorLines(split(e).join('')).slice(0, 3).join(' / ') || 'no output'}`);
      const errs = split(stderr);
      const outs = stdout.split(new RegExp(`@@${tag}:(?:\\d+|end)@@\n?`));
      return steps.map((_, i) => ({ stdout: outs[i] ?? '', errors: errorLines(errs[i] ?? '') }));
    },
    batch: async (commands) => {
      const out: (string | undefined)[] = [];
      let i = 0;
      while (i < commands.length) {
        const tag = randomBytes(6).toString('hex');
        const parts: string[] = [];
        let size = 0;
        const start = i;
        while (i < commands.length) {
          const line = `${commands[i]!.map(quote).join(' ')} ; echo @@${tag}:${i - start}@@`;
          const bytes = Buffer.byteLength(line) + 3;
          if (parts.length && size + bytes > MAX_BATCH_BYTES) break;
          parts.push(line);
          size += bytes;
          i++;
        }
        const { stdout, stderr } = await runToEnd(parts.join(' ; '), tag, (e) => `virsh batch did not complete: ${e.trim().split('\n').slice(0, 3).join(' / ') || 'no output'}`);
        const unexpected = unexpectedErrors(stderr);
        if (unexpected.length) throw new Error(`virsh: ${unexpected.slice(0, 3).join(' / ')}`);
        const segments = stdout.split(new RegExp(`@@${tag}:(?:\\d+|end)@@`));
        for (let k = 0; k < i - start; k++) {
          const s = segments[k] ?? '';
          out.push(s.trim() === '' ? undefined : s);
        }
      }
      return out;
    },
  };
}

/** The connection in force: --connect, then the YAML, then LIBVIRT_DEFAULT_URI, then the system daemon. */
/**
 * Whether a URI names a daemon on another host (a host in it: qemu+ssh://h/system,
 * qemu+tls://h/system): files it names are there, not here.
 */
export function isRemoteUri(uri: string): boolean {
  return /^[a-z0-9+]+:\/\/[^/?]/i.test(uri);
}

export function resolveUri(flag?: string, yaml?: string): string {
  return flag ?? yaml ?? process.env.LIBVIRT_DEFAULT_URI ?? 'qemu:///system';
}

/** The useful part of virsh's error output. */
export function libvirtMessage(e: unknown): string {
  const stderr = (e as { stderr?: string }).stderr ?? (e as Error).message;
  // virsh's warnings (polkit on a terminal) are not the failure: its error lines are, when there are any.
  const all = stderr.split('\n');
  const errors = all.filter((l) => l.startsWith('error:'));
  const lines = (errors.length ? errors : all).map((l) => l.replace(/^error:\s*/, '').trim()).filter(Boolean);
  return lines.filter((l) => !/^Failed to (start|build) pool/.test(l)).join('; ') || lines.join('; ');
}
