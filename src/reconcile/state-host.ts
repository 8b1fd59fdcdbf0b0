// A state directory belongs to one host of a fleet. Its inventory is what reconcile made there;
// read with another host's files (a mistyped --host, none where one is needed), every object of
// this host would look as if it had left the YAML, and --prune would delete them. So once a run
// with host targeting has written to a state directory, the directory remembers the host, and
// a run for another host is refused before anything is planned.
import { mkdir, readFile, writeFile } from 'node:fs/promises';
import path from 'node:path';
import { EXIT, UserError } from './errors.js';
import type { DesiredState } from './model.js';

const FILE = 'host.json';

/** Refuses a run for another host than the one this state directory is bound to. */
export async function checkStateHost(stateDir: string, state: Pick<DesiredState, 'target'>, given: boolean): Promise<void> {
  const bound = await boundHost(stateDir);
  const host = state.target?.host;
  if (!bound || !host || bound.toLowerCase() === host.toLowerCase()) return;
  throw new UserError(
    `${stateDir} holds the state of host ${bound}, and this run is for ${host}${given ? ' (--host)' : " (this machine's name; no --host given)"}: with ${host}'s files, ${bound}'s objects would look as if they had left the YAML. Give --host ${bound}, or another --state-dir`,
    EXIT.error,
    { reason: 'other-host', stateHost: bound, host },
  );
}

/** Binds the state directory to the run's host, once a run with host targeting writes to it. */
export async function bindStateHost(stateDir: string, state: Pick<DesiredState, 'target' | 'targeted'>): Promise<void> {
  if (!state.targeted || !state.target || (await boundHost(stateDir))) return;
  await mkdir(stateDir, { recursive: true });
  await writeFile(path.join(stateDir, FILE), `${JSON.stringify({ host: state.target.host })}\n`, { mode: 0o600 });
}

async function boundHost(stateDir: string): Promise<string | undefined> {
  const text = await readFile(path.join(stateDir, FILE), 'utf8').catch(() => undefined);
  if (!text) return undefined;
  try {
    return (JSON.parse(text) as { host?: string }).host;
  } catch {
    return undefined;
  }
}
