// Runs the real CLI once and reports wall time, exit code and how many processes it spawned.
import { execFile } from 'node:child_process';
import { readFile, rm } from 'node:fs/promises';
import path from 'node:path';
import { fileURLToPath } from 'node:url';

export const CLI = path.join(path.dirname(fileURLToPath(import.meta.url)), '..', 'cli.js');

export interface Measurement {
  seconds: number;
  spawned: number;
  code: number;
}

export async function measure(args: string[], trace: string): Promise<Measurement> {
  await rm(trace, { force: true });
  const t0 = process.hrtime.bigint();
  const code = await new Promise<number>((resolve) => {
    execFile('node', [CLI, ...args], { env: { ...process.env, VIRT_RECONCILE_TRACE: trace }, maxBuffer: 256 * 1024 * 1024 }, (err, stdout, stderr) => {
      // A failing step shows why, or its numbers mean nothing.
      if (err)
        process.stderr.write(
          `${args[0]} failed:\n${[
            ...String(stdout)
              .split('\n')
              .filter((l) => /FAILED|fail/.test(l))
              .slice(0, 10),
            ...String(stderr).split('\n').slice(0, 10),
          ].join('\n')}\n`,
        );
      resolve(err ? Number(err.code ?? 1) : 0);
    });
  });
  const seconds = Number(process.hrtime.bigint() - t0) / 1e9;
  const spawned = (await readFile(trace, 'utf8').catch(() => '')).split('\n').filter(Boolean).length;
  return { seconds, spawned, code };
}

export function report(title: string, rows: [string, Measurement][]): void {
  console.log(title);
  console.log('step                              seconds  processes  exit');
  for (const [name, r] of rows) console.log(`${name.padEnd(33)} ${r.seconds.toFixed(2).padStart(7)}  ${String(r.spawned).padStart(9)}  ${r.code}`);
}
