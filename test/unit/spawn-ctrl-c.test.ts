// A Ctrl-C at the terminal goes to reconcile's process group. A command spawned at that very
// moment is still in the group until it makes a group of its own, holds the signal pending and
// dies of it just before exec — having run nothing. Such a command is run again, once.
// (Simulated here by commands that SIGINT themselves, or their shell, on their first run.)
import { readFileSync } from 'node:fs';
import { mkdtemp, rm } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import path from 'node:path';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { run, runEach, session } from '../../src/tools/exec.js';

let dir: string;
beforeAll(async () => {
  dir = await mkdtemp(path.join(tmpdir(), 'vr-ctrl-c-'));
});
afterAll(() => rm(dir, { recursive: true, force: true }));

// Counts its runs in RUNS; dies of SIGINT on the first (its shell too, with `parent`).
const firstRunInterrupted = (name: string, parent = false) =>
  `echo run >> '${path.join(dir, name)}.runs'; if [ -e '${path.join(dir, name)}.seen' ]; then echo done; else touch '${path.join(dir, name)}.seen'; ${parent ? 'kill -INT $PPID' : 'kill -INT $$; sleep 5'}; fi`;
const runs = (name: string) =>
  readFileSync(path.join(dir, `${name}.runs`), 'utf8')
    .split('\n')
    .filter(Boolean).length;

describe('a command killed by SIGINT it was not sent by reconcile', () => {
  it('run: is run again, once, and its result is the second run', async () => {
    expect((await run('sh', ['-c', firstRunInterrupted('once')])).stdout).toBe('done\n');
    expect(runs('once')).toBe(2);
  });

  it('run: a second SIGINT is a failure that says so', async () => {
    await expect(run('sh', ['-c', `echo run >> '${path.join(dir, 'always')}.runs'; kill -INT $$; sleep 5`])).rejects.toThrow(/SIGINT/);
    expect(runs('always')).toBe(2);
  });

  it('session: started again, once, and given all the input it was given so far', async () => {
    const seen = path.join(dir, 'session.seen');
    const heard: string[] = [];
    const s = session('sh', ['-c', `if [ ! -e '${seen}' ]; then touch '${seen}'; kill -INT $$; fi; while read -r l; do echo "got $l" >&2; done`], (c) => heard.push(c), 'lines');
    s.write('a\n');
    await new Promise((r) => setTimeout(r, 100));
    s.write('b\n');
    s.end();
    const r = await s.exited;
    expect(r).toMatchObject({ code: 0, stderr: 'got a\ngot b\n' });
    expect(heard.join('')).toBe('got a\ngot b\n');
  });

  it('runEach: the shell is started again, once', async () => {
    const [r] = await runEach([['sh', '-c', firstRunInterrupted('each', true)]]);
    expect(r).toMatchObject({ code: 0, stdout: 'done\n' });
    expect(runs('each')).toBe(2);
  });
});
