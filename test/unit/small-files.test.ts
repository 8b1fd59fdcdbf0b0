// Seed and secret files are read only if regular and small: a FIFO would block a plan, a
// link to /dev/zero would never end, a huge file would be read whole before being refused.
import { execa } from 'execa';
import { mkdtemp, rm, symlink, truncate, writeFile } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import path from 'node:path';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { readSmallFile, readUnchanged } from '../../src/providers/common/small-files.js';

let dir: string;
const p = (f: string) => path.join(dir, f);
beforeAll(async () => {
  dir = await mkdtemp(path.join(tmpdir(), 'vr-small-'));
});
afterAll(() => rm(dir, { recursive: true, force: true }));

describe('readSmallFile', () => {
  it('refuses at once what is not a regular file, or too large, without reading it', async () => {
    await execa('mkfifo', [p('fifo')]);
    await expect(readSmallFile(p('fifo'))).rejects.toThrow(/is not a regular file/);
    await symlink('/dev/zero', p('zero'));
    await expect(readSmallFile(p('zero'))).rejects.toThrow(/is not a regular file/);
    await writeFile(p('big'), '');
    await truncate(p('big'), 2 * 1024 * 1024 * 1024);
    await expect(readSmallFile(p('big'))).rejects.toThrow(/over 16 MiB/);
  });

  it('reads a regular file, through a symlink too, and tells a write since by its signature', async () => {
    await writeFile(p('ud'), '#cloud-config\n');
    await symlink(p('ud'), p('ud-link'));
    const f = await readSmallFile(p('ud-link'));
    expect(f.content.toString()).toBe('#cloud-config\n');
    await expect(readUnchanged(p('ud'), f.signature)).resolves.toMatchObject({ sha256: f.sha256 });
    await new Promise((r) => setTimeout(r, 10));
    await writeFile(p('ud'), '#cloud-config\nx: 1\n');
    await expect(readUnchanged(p('ud'), f.signature)).rejects.toThrow(/changed since the plan/);
  });
});

describe('passphraseRefusal', () => {
  const spec = { origin: 'f.yaml:3:3', encryption: { passphraseFile: '/k/pass' } };
  it('refuses an unreadable or empty passphrase file, names why, and passes a usable one', async () => {
    const { passphraseRefusal } = await import('../../src/providers/common/small-files.js');
    const errors = new Map([['/k/pass', 'cannot read /k/pass: ENOENT']]);
    expect(passphraseRefusal(spec, new Map(), errors)).toBe('f.yaml:3:3: encryption.passphraseFile: cannot read /k/pass: ENOENT');
    const empty = new Map([['/k/pass', { sha256: '', size: 0, signature: 's', mode: 0o600 }]]);
    expect(passphraseRefusal(spec, empty, new Map())).toMatch(/is empty; a LUKS image with an empty passphrase opens for anyone/);
    const ok = new Map([['/k/pass', { sha256: 'x', size: 9, signature: 's', mode: 0o600 }]]);
    expect(passphraseRefusal(spec, ok, new Map())).toBeUndefined();
  });
});

describe('adopting a secret', () => {
  it('is refused when libvirt would give its value back (not private) or lose it (ephemeral)', async () => {
    const { diffSecrets } = await import('../../src/providers/secret/diff.js');
    const { desiredStateFrom } = await import('../../src/reconcile/config.js');
    const state = desiredStateFrom([{ path: '/vr-test/s.yaml', text: 'version: 1\nsecrets:\n  k: { usage: tls, name: k, valueFile: /vr-test/v, adopt: true }\n' }]);
    const run = (priv: boolean, eph: boolean) =>
      diffSecrets({
        state,
        secrets: [{ uuid: 'u1', usage: 'tls', usageId: 'k', private: priv, ephemeral: eph }],
        contents: new Map([['/vr-test/v', { sha256: 'a', size: 3, signature: 's', mode: 0o600 }]]),
        inventory: { version: 1, objects: {} },
        prune: false,
        orphans: [],
        errors: new Map(),
      });
    expect(run(false, false).refusals[0]?.message).toMatch(/is not private \(libvirt gives its value back to anyone who asks\)/);
    expect(run(true, true).refusals[0]?.message).toMatch(/is ephemeral/);
    expect(run(true, false).refusals).toEqual([]);
  });
});

describe('the recorded digest of a secret value', () => {
  it('is scrypt over a salt (slow to check guesses against), recognised by its salt; older sha256 records still read', async () => {
    const { saltedDigest, sameValue } = await import('../../src/providers/secret/diff.js');
    const { createHash } = await import('node:crypto');
    const sha = 'a'.repeat(64);
    const d = saltedDigest(sha, '0011223344556677');
    expect(d).toMatch(/^scrypt:0011223344556677:[0-9a-f]{64}$/);
    expect(sameValue(d, sha)).toBe(true);
    expect(sameValue(d, 'b'.repeat(64))).toBe(false);
    const old = `0011:${createHash('sha256').update(`0011:${sha}`).digest('hex')}`;
    expect(sameValue(old, sha)).toBe(true);
  });
});
