// One agent per state directory: two would fetch into the same clone (corrupting it) and take
// turns undoing each other. The apply lock serializes applies only; this file says whose the
// directory is while a watch service runs. One left by a killed agent (its process gone) is taken over.
import { mkdir, readFile, rm, writeFile } from 'node:fs/promises';
import path from 'node:path';
import { processAlive } from '../tools/exec.js';
import { EXIT, UserError } from '../reconcile/errors.js';

export async function holdAgentLock(stateDir: string): Promise<() => Promise<void>> {
  const file = path.join(stateDir, 'watch.pid');
  await mkdir(stateDir, { recursive: true });
  for (let attempt = 0; ; attempt++) {
    try {
      // Created, never overwritten: of two agents started at once, one gets it.
      await writeFile(file, `${process.pid}\n`, { flag: 'wx' });
      break;
    } catch (e) {
      if ((e as NodeJS.ErrnoException).code !== 'EEXIST' || attempt > 0) throw e;
      const pid = Number((await readFile(file, 'utf8').catch(() => '')).trim());
      if (pid && processAlive(pid))
        throw new UserError(`another reconcile watch (pid ${pid}) runs on ${stateDir}; one agent per state directory (give this one its own --state-dir)`, EXIT.error);
      await rm(file, { force: true });
    }
  }
  return async () => {
    const now = Number((await readFile(file, 'utf8').catch(() => '')).trim());
    if (now === process.pid) await rm(file, { force: true });
  };
}
