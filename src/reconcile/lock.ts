// One apply at a time per state directory. proper-lockfile does the atomic part (mkdir);
// a pid file inside the lock lets a waiting apply say who holds it and take over at once
// from a process that no longer exists (kill -9), instead of waiting out a stale timeout.
import { readFileSync } from 'node:fs';
import { mkdir, readFile, rm, writeFile } from 'node:fs/promises';
import { hostname } from 'node:os';
import path from 'node:path';
import lockfile from 'proper-lockfile';
import { UserError } from './errors.js';

export interface Lock {
  release(): Promise<void>;
}

interface Holder {
  pid: number;
  host: string;
  /** a reboot ends every process: a lock from an earlier boot is stale whatever its pid */
  boot: string;
  command: string;
  since: string;
}

function bootId(): string {
  try {
    return readFileSync('/proc/sys/kernel/random/boot_id', 'utf8').trim();
  } catch {
    return 'unknown';
  }
}

function alive(pid: number): boolean {
  try {
    process.kill(pid, 0);
    return true;
  } catch (e) {
    return (e as NodeJS.ErrnoException).code === 'EPERM';
  }
}

export async function acquireLock(
  stateDir: string,
  opts: { timeoutSeconds: number; command: string; log: (msg: string) => void },
): Promise<Lock> {
  await mkdir(stateDir, { recursive: true, mode: 0o700 });
  const lockPath = path.join(stateDir, 'apply.lock');
  const holderFile = path.join(lockPath, 'holder.json');
  const deadline = Date.now() + opts.timeoutSeconds * 1000;
  let said = false;
  for (;;) {
    try {
      // Staleness is decided by the holder record (pid and boot), so proper-lockfile's own
      // mtime refresh only backs it up: a long window, and a warning rather than a crash
      // when CPU-bound work (LUKS key derivation) delays the refresh timer.
      const release = await lockfile.lock(stateDir, {
        lockfilePath: lockPath,
        stale: 10 * 60_000,
        update: 60_000,
        realpath: false,
        onCompromised: (err) => opts.log(`warning: lock refresh was late (${err.message}); continuing`),
      });
      const me: Holder = { pid: process.pid, host: hostname(), boot: bootId(), command: opts.command, since: new Date().toISOString() };
      await writeFile(holderFile, JSON.stringify(me));
      // proper-lockfile removes its directory with rmdir: the holder file must go first.
      return { release: async () => { await rm(holderFile, { force: true }); await release(); } };
    } catch (e) {
      if ((e as NodeJS.ErrnoException).code !== 'ELOCKED') throw e;
    }
    let holder: Holder | undefined;
    try {
      holder = JSON.parse(await readFile(holderFile, 'utf8')) as Holder;
    } catch {
      holder = undefined;
    }
    if (holder && holder.host === hostname() && (holder.boot !== bootId() || !alive(holder.pid))) {
      opts.log(`taking over the lock of pid ${holder.pid}, which no longer runs`);
      await rm(lockPath, { recursive: true, force: true });
      continue;
    }
    const who = holder ? `pid ${holder.pid} (${holder.command}, since ${holder.since})` : 'another reconcile';
    if (Date.now() >= deadline) {
      throw new UserError(`state directory ${stateDir} is locked by ${who}; ${opts.timeoutSeconds ? `gave up after ${opts.timeoutSeconds}s` : 'not waiting (--lock-timeout 0)'}`);
    }
    if (!said) {
      opts.log(`waiting for the lock on ${stateDir}, held by ${who} (--lock-timeout ${opts.timeoutSeconds}s)`);
      said = true;
    }
    await new Promise((r) => setTimeout(r, 250));
  }
}
