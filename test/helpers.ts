// Shared test plumbing: run the real CLI, read the host with real qemu-img, count spawns.
import { spawn, type ChildProcess } from 'node:child_process';
import { mkdtemp, open, readdir, readFile, rm, writeFile } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import path from 'node:path';
import { fileURLToPath } from 'node:url';
import { execa } from 'execa';
import { afterAll } from 'vitest';
import type { PrivateLibvirtd } from '../src/dev/private-libvirtd.js';
import { readInventory } from '../src/reconcile/inventory.js';

export const ROOT = path.resolve(path.dirname(fileURLToPath(import.meta.url)), '..');
export const CLI = path.join(ROOT, 'dist', 'cli.js');

export interface CliResult {
  code: number;
  stdout: string;
  stderr: string;
}

export interface Sandbox {
  dir: string;
  stateDir: string;
  trace: string;
  /** runs `reconcile ARGS -f <dir>/storage.yaml --state-dir <dir>/state` */
  run(...args: string[]): Promise<CliResult>;
  /** the same, started in the background (to act on the host, or send a signal, while it runs) */
  start(...args: string[]): Started;
  /** the same, on a terminal (stdin and stdout a pty) typing `input`; stdout and stderr both arrive in stdout */
  runInTerminal(input: string, ...args: string[]): Promise<CliResult>;
  /** the process argv lines the last run(s) spawned, since the last call of resetTrace */
  spawned(): Promise<string[][]>;
  resetTrace(): Promise<void>;
  yaml(text: string, name?: string): Promise<string>;
  cleanup(): Promise<void>;
}

export interface Started {
  child: ChildProcess;
  /** its exit code (null when a signal ended it) */
  exited: Promise<number | null>;
  /** what it has printed so far */
  stdout(): string;
  stderr(): string;
  /** SIGINT to its whole process group, as a Ctrl-C at its terminal would send */
  interrupt(): void;
}

export interface SandboxOptions {
  /** run the CLI inside this daemon's mount namespace, connected to it */
  libvirt?: PrivateLibvirtd;
}

export async function sandbox(name: string, opts: SandboxOptions = {}): Promise<Sandbox> {
  const dir = await mkdtemp(path.join(tmpdir(), `vr-${name}-`));
  const stateDir = path.join(dir, 'state');
  const trace = path.join(dir, 'trace.jsonl');
  const withSandbox = (args: string[]) => {
    // `apply PLAN.json` runs the YAML the plan embeds and takes no -f.
    const planFile = args[0] === 'apply' && args[1]?.endsWith('.json');
    const full = [...args, ...(args.includes('-f') || planFile ? [] : ['-f', path.join(dir, 'storage.yaml')]), '--state-dir', stateDir];
    if (opts.libvirt) full.push('--connect', opts.libvirt.uri);
    return full;
  };
  const sb: Sandbox = {
    dir,
    stateDir,
    trace,
    run: (...args) => cli(withSandbox(args), { VIRT_RECONCILE_TRACE: trace }, opts.libvirt?.nsenter),
    start: (...args) => {
      const argv = [...(opts.libvirt?.nsenter ?? []), 'node', CLI, ...withSandbox(args)];
      // A process group of its own, as a command started at a terminal has.
      const child = spawn(argv[0]!, argv.slice(1), { detached: true, stdio: ['ignore', 'pipe', 'pipe'], env: { ...process.env, VIRT_RECONCILE_TRACE: trace } });
      let stdout = '';
      let stderr = '';
      child.stdout!.on('data', (d: Buffer) => (stdout += d.toString()));
      child.stderr!.on('data', (d: Buffer) => (stderr += d.toString()));
      return {
        child,
        exited: new Promise((r) => child.once('exit', (code) => r(code))),
        stdout: () => stdout,
        stderr: () => stderr,
        interrupt: () => process.kill(-child.pid!, 'SIGINT'),
      };
    },
    runInTerminal: (input, ...args) => cliInTerminal(withSandbox(args), input, { VIRT_RECONCILE_TRACE: trace }, opts.libvirt?.nsenter),
    spawned: async () =>
      (await readFile(trace, 'utf8').catch(() => ''))
        .split('\n')
        .filter(Boolean)
        .map((l) => JSON.parse(l) as string[]),
    resetTrace: () => rm(trace, { force: true }),
    yaml: async (text, file = 'storage.yaml') => {
      const p = path.join(dir, file);
      await writeFile(p, text.replaceAll('$DIR', dir));
      return p;
    },
    cleanup: () => rm(dir, { recursive: true, force: true }),
  };
  return sb;
}

/** Polls cond every 20 ms (fast enough to act inside a race window) until true, or fails naming what. */
export async function waitFor(cond: () => boolean | Promise<boolean>, what: string, ms = 30_000): Promise<void> {
  const end = Date.now() + ms;
  while (!(await cond())) {
    if (Date.now() > end) throw new Error(`timed out waiting for ${what}`);
    await new Promise((r) => setTimeout(r, 20));
  }
}

/** The <disk> of target `t` in a domain's XML. */
export function diskOf(xml: string, t: string): string {
  return xml.split('<disk').find((d) => d.includes(`<target dev='${t}'`)) ?? '';
}

/** Every file under a directory, read as text (to look for what must never be written there). */
export async function allText(dir: string): Promise<string> {
  const names = await readdir(dir, { recursive: true, withFileTypes: true });
  const texts = await Promise.all(names.filter((d) => d.isFile()).map((d) => readFile(path.join(d.parentPath, d.name), 'utf8')));
  return texts.join('\n');
}

/** A user-space iSCSI target (tgtd) on 127.0.0.1, and what a test makes on it. */
export interface Tgtd {
  port: number;
  /** a target `iqn` with `lunFile` as LUN 1, open to every initiator; with `chap`, only to that login */
  target(iqn: string, lunFile: string, chap?: { user: string; password: string }): Promise<void>;
  stop(): void;
}

/** Starts a tgtd; `slot` keeps the ports of test files that run at once apart. */
export async function startTgtd(slot: number): Promise<Tgtd> {
  const port = 3260 + slot + (process.pid % 200);
  const control = slot + (process.pid % 200);
  const tgtadm = (...a: string[]) => execa('tgtadm', ['-C', String(control), '--lld', 'iscsi', ...a]);
  const child = spawn('tgtd', ['-f', '-C', String(control), '--iscsi', `portal=127.0.0.1:${port}`], { stdio: 'ignore' });
  await waitFor(async () => (await tgtadm('--op', 'show', '--mode', 'target').catch(() => undefined)) !== undefined, 'tgtd');
  let tid = 0;
  return {
    port,
    async target(iqn, lunFile, chap) {
      const t = String(++tid);
      await tgtadm('--op', 'new', '--mode', 'target', '--tid', t, '-T', iqn);
      await tgtadm('--op', 'new', '--mode', 'logicalunit', '--tid', t, '--lun', '1', '-b', lunFile);
      await tgtadm('--op', 'bind', '--mode', 'target', '--tid', t, '-I', 'ALL');
      if (!chap) return;
      await tgtadm('--op', 'new', '--mode', 'account', '--user', chap.user, '--password', chap.password);
      await tgtadm('--op', 'bind', '--mode', 'account', '--tid', t, '--user', chap.user);
    },
    stop: () => void child.kill('SIGKILL'),
  };
}

/** Waits until a process traced into sb (VIRT_RECONCILE_TRACE) has spawned a command with `word` in its argv. */
export function waitForSpawn(sb: Sandbox, word: string, ms?: number): Promise<void> {
  return waitFor(async () => (await sb.spawned()).some((a) => a.includes(word)), `a spawned ${word}`, ms);
}

/** Sandboxes for one test file, all removed after its last test. */
export function sandboxes(): (name: string, opts?: SandboxOptions) => Promise<Sandbox> {
  const made: Sandbox[] = [];
  afterAll(async () => {
    for (const b of made) await b.cleanup();
  });
  return async (name, opts) => {
    const sb = await sandbox(name, opts);
    made.push(sb);
    return sb;
  };
}

export async function cli(args: string[], env: Record<string, string> = {}, prefix: string[] = []): Promise<CliResult> {
  const argv = [...prefix, 'node', CLI, ...args];
  const r = await execa(argv[0]!, argv.slice(1), { reject: false, env: { ...env }, cwd: ROOT });
  return { code: r.exitCode ?? -1, stdout: String(r.stdout), stderr: String(r.stderr) };
}

/**
 * Runs the CLI on a pseudo-terminal (util-linux `script`), as a person at a terminal does:
 * stdin and stdout are a tty, `input` is typed. The terminal merges stdout and stderr and ends
 * lines with CRLF; they are returned as stdout with LF.
 */
export async function cliInTerminal(args: string[], input: string, env: Record<string, string> = {}, prefix: string[] = []): Promise<CliResult> {
  const sh = (a: string) => `'${a.replaceAll("'", "'\\''")}'`;
  const command = [...prefix, 'node', CLI, ...args].map(sh).join(' ');
  const { NO_COLOR: _, ...inherited } = process.env;
  const r = await execa('script', ['-qec', command, '/dev/null'], { reject: false, input, cwd: ROOT, extendEnv: false, env: { ...inherited, TERM: 'xterm', ...env } });
  return { code: r.exitCode ?? -1, stdout: String(r.stdout).replace(/\r\n/g, '\n'), stderr: String(r.stderr) };
}

/** qemu-img's own view of a file, read independently of the provider under test. */
// biome-ignore lint/suspicious/noExplicitAny: qemu-img's JSON, read field by field by the assertions
export async function qemuInfo(p: string, format?: string): Promise<Record<string, any>> {
  const r = await execa('qemu-img', ['info', '--force-share', '--output=json', ...(format ? ['-f', format] : []), p]);
  return JSON.parse(String(r.stdout));
}

/** Spawns that write images: a no-op must have none. */
export function writers(argvs: string[][]): string[][] {
  return argvs.filter((a) => a[0] === 'qemu-img' && ['create', 'convert', 'resize', 'amend', 'commit', 'rebase', 'check'].includes(a[1] ?? ''));
}

export async function qemuImg(...args: string[]): Promise<string> {
  return String((await execa('qemu-img', args)).stdout);
}

/** virsh against a private daemon, for assertions on what libvirt reports. */
export async function virsh(lv: PrivateLibvirtd, ...args: string[]): Promise<string> {
  return String((await execa('virsh', ['-q', '-c', lv.uri, ...args])).stdout);
}

/** Runs a command inside the daemon's mount namespace (where fs pools are mounted). */
export async function inNs(lv: PrivateLibvirtd, ...argv: string[]): Promise<string> {
  const full = [...lv.nsenter, ...argv];
  return String((await execa(full[0]!, full.slice(1))).stdout);
}

/** Edits a qcow2's refcount block: a leak (unreferenced cluster with refcount 1) or a corruption (L1 table with refcount 0). */
export async function damageQcow2(file: string, kind: 'leak' | 'corrupt'): Promise<void> {
  const fh = await open(file, 'r+');
  try {
    const h = Buffer.alloc(104);
    await fh.read(h, 0, 104, 0);
    const clusterBits = h.readUInt32BE(20);
    const rb = Buffer.alloc(8);
    await fh.read(rb, 0, 8, Number(h.readBigUInt64BE(48)));
    const block = Number(rb.readBigUInt64BE(0));
    const entry = Buffer.alloc(2);
    if (kind === 'leak') {
      entry.writeUInt16BE(1);
      await fh.write(entry, 0, 2, block + 2 * 40);
      await fh.truncate(41 << clusterBits); // the leaked cluster lies inside the file
    } else {
      entry.writeUInt16BE(0);
      await fh.write(entry, 0, 2, block + 2 * Number(h.readBigUInt64BE(40) >> BigInt(clusterBits)));
    }
  } finally {
    await fh.close();
  }
}

/** What the inventory records now (inventory.json with its journal: also right after a kill). */
// biome-ignore lint/suspicious/noExplicitAny: records are read field by field by the assertions
export async function recorded(stateDir: string): Promise<Record<string, any>> {
  return (await readInventory(stateDir)).objects;
}
