// Secret values read by this process never come back through a tool's error output.
import { describe, expect, it } from 'vitest';
import { CommandError } from '../src/tools/exec.js';
import { redact, rememberSecret } from '../src/tools/redact.js';

describe('redaction of secret values', () => {
  it("blanks a remembered value (and its trimmed form) out of a failed command's message and output", () => {
    rememberSecret(Buffer.from('Hunter2-Passphrase\n'));
    const e = new CommandError(['qemu-img', 'create'], 'qemu-img: bad key "Hunter2-Passphrase\n" given\n', 1, 'echo Hunter2-Passphrase');
    expect(e.message).toBe('qemu-img create failed (exit 1): qemu-img: bad key "[secret]" given');
    expect(e.stderr).not.toContain('Hunter2');
    expect(e.stdout).toBe('echo [secret]');
  });

  it('leaves short values alone (they would blank ordinary words) and text without a secret as it is', () => {
    rememberSecret(Buffer.from('abc'));
    expect(redact('abcdef is fine')).toBe('abcdef is fine');
  });
});
