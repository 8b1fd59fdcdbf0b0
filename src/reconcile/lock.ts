// One apply at a time per state directory: a lock directory made with mkdir (atomic), with
// a holder record inside naming pid, host and boot. A lock whose holder no longer runs
// (kill -9) or ran before the last reboot is taken over at once. Staleness is never guessed
// from timestamps: a long, CPU-bound apply (LUKS key derivation, thousands of volumes)
// must keep its lock however late its timers fire.
import { readFileSync } from 'node:fs';
import { mkdir, readFile, rename, rm, stat, writeFile } from 'node:fs/promises';
import { hostname } from 'node:os';
import path from 'node:path';
import { processAlive } from '../providers/exec.js';
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

// A lock directory without a holder record is one whose maker died between mkdir and
// writing the record (microseconds); after this long it is certainly abandoned.
const ORPHAN_MS = 30_000;

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
      await mkdir(lockPath);
      const me: Holder = { pid: process.pid, host: hostname(), boot: bootId(), command: opts.command, since: new Date().toISOString() };
      // Written whole or not at all: a reader never sees half a record.
      await writeFile(`${holderFile}.tmp`, JSON.stringify(me));
      await rename(`${holderFile}.tmp`, holderFile);
      return { release: () => rm(lockPath, { recursive: true, force: true }) };
    } catch (e) {
      if ((e as NodeJS.ErrnoException).code !== 'EEXIST') throw e;
    }
    let holder: Holder | undefined;
    try {
      holder = JSON.parse(await readFile(holderFile, 'utf8')) as Holder;
    } catch {
      holder = undefined;
    }
    const orphan = !holder && Date.now() - (await stat(lockPath).then((s) => s.mtimeMs, () => Date.now())) > ORPHAN_MS;
    if (orphan || (holder && holder.host === hostname() && (holder.boot !== bootId() || !processAlive(holder.pid)))) {
      opts.log(holder ? `taking over the lock of pid ${holder.pid}, which no longer runs` : 'taking over an abandoned lock');
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
