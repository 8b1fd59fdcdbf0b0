// One apply at a time per state directory: a lock directory made with mkdir (atomic), with
// a holder record inside naming pid, host and boot. A lock whose holder no longer runs
// (kill -9) or ran before the last reboot is taken over at once. Staleness is never guessed
// from timestamps: a long, CPU-bound apply (LUKS key derivation, thousands of volumes)
// must keep its lock however late its timers fire.
//
// Taking over is a read-then-remove, which two waiters could interleave (both read the dead
// holder; one removes it and takes the lock; the other then removes the new, live lock). So a
// takeover happens only inside a second, short-lived mkdir mutex, and the holder is read
// again inside it: exactly one waiter removes a given dead lock.
import { readFileSync, rmdirSync, rmSync } from 'node:fs';
import { mkdir, readFile, rename, rm, rmdir, stat, writeFile } from 'node:fs/promises';
import { hostname } from 'node:os';
import path from 'node:path';
import { processAlive } from '../tools/exec.js';
import { UserError } from './errors.js';

export interface Lock {
  release(): Promise<void>;
  /** for a process about to exit from a signal handler */
  releaseSync(): void;
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

// A lock directory without a holder record is one whose maker died between mkdir and
// writing the record (microseconds); after this long it is certainly abandoned. The same
// holds for the takeover mutex, which lives for a few file operations.
const ORPHAN_MS = 30_000;

async function readHolder(file: string): Promise<Holder | undefined> {
  try {
    return JSON.parse(await readFile(file, 'utf8')) as Holder;
  } catch {
    return undefined;
  }
}

const ageMs = (p: string) =>
  stat(p).then(
    (s) => Date.now() - s.mtimeMs,
    () => 0,
  );

function dead(h: Holder): boolean {
  return h.host === hostname() && (h.boot !== bootId() || !processAlive(h.pid));
}

/** Who holds the state directory's lock now (a live process), if anyone: for a plan to say it may see work in progress. */
export async function lockHolder(stateDir: string): Promise<{ pid: number; command: string } | undefined> {
  const holder = await readHolder(path.join(stateDir, 'apply.lock', 'holder.json'));
  return holder && !dead(holder) ? { pid: holder.pid, command: holder.command } : undefined;
}

/** Is the lock at lockPath abandoned (dead holder, or no holder record for a long time)? */
async function abandoned(lockPath: string): Promise<{ holder?: Holder } | undefined> {
  const holder = await readHolder(path.join(lockPath, 'holder.json'));
  if (holder) return dead(holder) ? { holder } : undefined;
  return (await ageMs(lockPath)) > ORPHAN_MS ? {} : undefined;
}

/** Removes an abandoned lock under the takeover mutex; true if this call removed it. */
async function takeOver(lockPath: string, log: (m: string) => void): Promise<boolean> {
  const mutex = `${lockPath}.takeover`;
  try {
    await mkdir(mutex);
  } catch (e) {
    if ((e as NodeJS.ErrnoException).code !== 'EEXIST') throw e;
    // Another waiter is taking over; a mutex left by a waiter killed inside it is removed
    // once it is far older than any takeover takes.
    if ((await ageMs(mutex)) > ORPHAN_MS) await rmdir(mutex).catch(() => undefined);
    return false;
  }
  try {
    const stale = await abandoned(lockPath); // read again: the lock may be new and live by now
    if (!stale) return false;
    log(stale.holder ? `taking over the lock of pid ${stale.holder.pid}, which no longer runs` : 'taking over an abandoned lock');
    await rm(lockPath, { recursive: true, force: true });
    return true;
  } finally {
    await rmdir(mutex).catch(() => undefined);
  }
}

export async function acquireLock(stateDir: string, opts: { timeoutSeconds: number; command: string; log: (msg: string) => void }): Promise<Lock> {
  // The first directory this call made: removed again on release if nothing was put in it,
  // so a refused or failed apply leaves no empty state directory behind.
  const madeDir = await mkdir(stateDir, { recursive: true, mode: 0o700 });
  const lockPath = path.join(stateDir, 'apply.lock');
  const holderFile = path.join(lockPath, 'holder.json');
  const deadline = Date.now() + opts.timeoutSeconds * 1000;
  let said = false;
  // rmdir removes only an empty directory: what stops the walk up is anything left inside.
  const tidy = () => {
    if (!madeDir) return;
    for (let d = stateDir; d.length >= madeDir.length; d = path.dirname(d)) {
      try {
        rmdirSync(d);
      } catch {
        return;
      }
    }
  };
  for (;;) {
    try {
      await mkdir(lockPath);
      const me: Holder = { pid: process.pid, host: hostname(), boot: bootId(), command: opts.command, since: new Date().toISOString() };
      // Written whole or not at all: a reader never sees half a record.
      await writeFile(`${holderFile}.tmp`, JSON.stringify(me));
      await rename(`${holderFile}.tmp`, holderFile);
      return {
        release: async () => {
          await rm(lockPath, { recursive: true, force: true });
          tidy();
        },
        releaseSync: () => {
          rmSync(lockPath, { recursive: true, force: true });
          tidy();
        },
      };
    } catch (e) {
      if ((e as NodeJS.ErrnoException).code !== 'EEXIST') throw e;
    }
    if (await abandoned(lockPath)) {
      await takeOver(lockPath, opts.log);
      continue;
    }
    const holder = await readHolder(holderFile);
    const who = holder ? `pid ${holder.pid} (${holder.command}, since ${holder.since})` : 'another reconcile';
    if (Date.now() >= deadline) {
      tidy();
      throw new UserError(
        `state directory ${stateDir} is locked by ${who}; ${opts.timeoutSeconds ? `gave up after ${opts.timeoutSeconds}s` : 'not waiting (--lock-timeout 0)'}`,
        1,
        { reason: 'locked', holder },
      );
    }
    if (!said) {
      opts.log(`waiting for the lock on ${stateDir}, held by ${who} (--lock-timeout ${opts.timeoutSeconds}s)`);
      said = true;
    }
    await new Promise((r) => setTimeout(r, 250));
  }
}
