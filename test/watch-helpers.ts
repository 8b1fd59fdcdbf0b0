// Running `reconcile watch` as a real process in tests: a free port, polling, its log and status.
import { spawn, type ChildProcess } from 'node:child_process';
import { createServer } from 'node:net';
import { CLI, type Sandbox } from './helpers.js';

export const procs: ChildProcess[] = [];

async function freePort(): Promise<number> {
  return new Promise((resolve) => {
    const s = createServer().listen(0, '127.0.0.1', () => {
      const { port } = s.address() as { port: number };
      s.close(() => resolve(port));
    });
  });
}

export async function until<T>(fn: () => Promise<T | undefined | false>, what: string, ms = 30_000): Promise<T> {
  const end = Date.now() + ms;
  for (;;) {
    const v = await fn().catch(() => undefined);
    if (v) return v as T;
    if (Date.now() > end) throw new Error(`timed out waiting for ${what}`);
    await new Promise((r) => setTimeout(r, 200));
  }
}

export interface Watch {
  url: string;
  proc: ChildProcess;
  log: () => string;
  // biome-ignore lint/suspicious/noExplicitAny: the service's /status JSON, read field by field by the assertions
  status: () => Promise<Record<string, any>>;
  exit: () => Promise<number | null>;
}

export async function startWatch(sb: Sandbox, args: string[], prefix: string[] = []): Promise<Watch> {
  const port = await freePort();
  const argv = [...prefix, 'node', CLI, 'watch', '--state-dir', sb.stateDir, '--listen', `127.0.0.1:${port}`, ...args];
  const proc = spawn(argv[0]!, argv.slice(1), { stdio: ['ignore', 'pipe', 'pipe'] });
  procs.push(proc);
  let out = '';
  proc.stdout!.on('data', (d: Buffer) => (out += d.toString()));
  proc.stderr!.on('data', (d: Buffer) => (out += d.toString()));
  const exited = new Promise<number | null>((r) => proc.once('exit', (code) => r(code)));
  const url = `http://127.0.0.1:${port}`;
  await until(async () => (await fetch(`${url}/healthz`)).ok, 'the watch service to listen');
  // biome-ignore lint/suspicious/noExplicitAny: as above
  return { url, proc, log: () => out, status: async () => (await fetch(`${url}/status`)).json() as Promise<Record<string, any>>, exit: () => exited };
}
