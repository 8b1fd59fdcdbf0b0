// Application hooks: argv lists (never a shell string) with a timeout.
import { execa } from 'execa';
import { traceSpawn } from './exec.js';

export async function runHook(argv: string[], timeoutSeconds: number): Promise<void> {
  traceSpawn(argv);
  const r = await execa(argv[0]!, argv.slice(1), { reject: false, timeout: timeoutSeconds * 1000, stdin: 'ignore', env: { LC_ALL: 'C' }, cleanup: false });
  if (r.timedOut) throw new Error(`hook ${JSON.stringify(argv)} timed out after ${timeoutSeconds}s`);
  if (r.exitCode !== 0)
    throw new Error(`hook ${JSON.stringify(argv)} failed (exit ${r.exitCode}): ${String(r.stderr).trim().split('\n').slice(-2).join(' / ') || 'no error output'}`);
}
