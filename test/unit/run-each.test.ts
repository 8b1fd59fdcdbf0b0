// runEach: many commands in one shell process. Each argument must reach its command exactly as
// given (the script is built by quoting, so hostile names must not run anything), and each
// command's exit code, output and error output must be its own.
import { existsSync } from 'node:fs';
import { mkdtemp, rm } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import path from 'node:path';
import { describe, expect, it } from 'vitest';
import { runEach } from '../../src/tools/exec.js';

describe('runEach', () => {
  it('passes every argument literally: quotes, $(...), backticks, newlines, a leading dash', async () => {
    const dir = await mkdtemp(path.join(tmpdir(), 'vr-run-each-'));
    try {
      const pwned = path.join(dir, 'pwned');
      const hostile = [`it's`, `"dq"`, `$(touch ${pwned})`, `\`touch ${pwned}\``, `a;touch ${pwned}`, 'line1\nline2', '-n', ' spaced ', 'ünïcødé', `'; touch ${pwned}; '`];
      const results = await runEach(hostile.map((h) => ['printf', '%s', h]));
      expect(results.map((r) => r.stdout)).toEqual(hostile);
      expect(results.every((r) => r.code === 0 && r.stderr === '')).toBe(true);
      expect(existsSync(pwned)).toBe(false);
    } finally {
      await rm(dir, { recursive: true, force: true });
    }
  });

  it("keeps each command's exit code, stdout and stderr apart, and goes on after a failure", async () => {
    const results = await runEach([
      ['sh', '-c', 'echo out1; echo warn1 >&2'],
      ['sh', '-c', 'echo bad >&2; exit 3'],
      ['sh', '-c', 'printf "{\\"a\\": 1}"'],
    ]);
    expect(results).toEqual([
      { code: 0, stdout: 'out1\n', stderr: 'warn1\n' },
      { code: 3, stdout: '', stderr: 'bad\n' },
      { code: 0, stdout: '{"a": 1}', stderr: '' },
    ]);
  });

  it('sizes its scripts in bytes: many multi-byte arguments do not make an argument too long for the kernel', async () => {
    const many = Array.from({ length: 1500 }, (_, i) => ['printf', '%s', `${i}${'日'.repeat(40)}`]);
    const results = await runEach(many);
    expect(results.every((r) => r.code === 0)).toBe(true);
    expect(results.map((r) => r.stdout)).toEqual(many.map((c) => c[2]));
  });

  it('splits a long list over several shell processes without losing or reordering any', async () => {
    const many = Array.from({ length: 3000 }, (_, i) => ['printf', '%s', `${i}-${'x'.repeat(40)}`]);
    const results = await runEach(many);
    expect(results.map((r) => r.stdout)).toEqual(many.map((c) => c[2]));
  });
});
