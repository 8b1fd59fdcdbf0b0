// Pure decisions behind wipe and cloud-init seeds: which byte ranges a wipe writes, when a
// record's wipe changes, what a seed's digest covers, and which rebuilds need no flag.
import { describe, expect, it } from 'vitest';
import { planSeed, sameSeed, SEED_AS_BUILT, SEED_CHANGED, seedContentOnly, seedIdentity } from '../../src/providers/common/cloud-init.js';
import { wipeChange } from '../../src/providers/common/decisions.js';
import type { ImageSpec } from '../../src/reconcile/model.js';
import { parseSeekOutput } from '../../src/tools/extents.js';

describe('data extents (xfs_io seek -r -a)', () => {
  it('pairs each DATA offset with the next HOLE, the last with the size', () => {
    expect(parseSeekOutput('Whence\tResult\nDATA\t0\nHOLE\t200704\nDATA\t262144\nHOLE\t393216\n', 393216)).toEqual([
      [0, 200704],
      [262144, 393216],
    ]);
    expect(parseSeekOutput('Whence\tResult\nHOLE\t0\nDATA\t1048576\n', 2097152)).toEqual([[1048576, 2097152]]);
    expect(parseSeekOutput('Whence\tResult\nHOLE\t0\n', 4096)).toEqual([]);
    // A file that grew since: nothing past the size it had is written.
    expect(parseSeekOutput('DATA\t0\nHOLE\t8192\n', 4096)).toEqual([[0, 4096]]);
  });
});

describe('wipe in the record', () => {
  it('changes only when the declaration differs, and "none" removes it', () => {
    expect(wipeChange(undefined, undefined)).toBeUndefined();
    expect(wipeChange('zero', 'zero')).toBeUndefined();
    expect(wipeChange(undefined, 'dod')).toEqual({ change: { field: 'wipe', from: 'none', to: 'dod' }, set: 'dod' });
    expect(wipeChange('zero', undefined)).toEqual({ change: { field: 'wipe', from: 'zero', to: 'none' }, set: 'none' });
  });
});

describe('cloud-init seeds', () => {
  const spec = (files: Record<string, string>) => ({ name: 'seed', source: { kind: 'cloudInit', files } }) as unknown as ImageSpec;
  const file = (sha: string) => ({ sha256: sha, size: 1, signature: `sig-${sha.slice(0, 4)}`, mode: 0o600 });
  const digests = new Map([
    ['/c/user-data', file('a'.repeat(64))],
    ['/c/meta-data', file('b'.repeat(64))],
    ['/c/net', file('c'.repeat(64))],
  ]);

  it('holds the declared files under their NoCloud names, and a generated meta-data naming the image', () => {
    const s = planSeed(spec({ userData: '/c/user-data', networkConfig: '/c/net' }), digests);
    expect(s?.ok && s.entries.map((e) => [e.name, e.path ?? e.text])).toEqual([
      ['user-data', '/c/user-data'],
      ['meta-data', 'instance-id: seed\n'],
      ['network-config', '/c/net'],
    ]);
  });

  it('has a digest that changes with any file and names no content', () => {
    const a = planSeed(spec({ userData: '/c/user-data', metaData: '/c/meta-data' }), digests);
    const b = planSeed(spec({ userData: '/c/user-data', metaData: '/c/meta-data' }), new Map([...digests, ['/c/meta-data', file('d'.repeat(64))]]));
    expect(a?.ok && b?.ok && a.digest !== b.digest).toBe(true);
    // Recorded salted: two records of one seed differ, and each is recognised by its own salt.
    const [one, two] = a?.ok ? [seedIdentity(a.digest), seedIdentity(a.digest)] : ['', ''];
    expect(one).toMatch(/^cloudInit:[0-9a-f]{16}:[0-9a-f]{64}$/);
    expect(one).not.toBe(two);
    expect(a?.ok && sameSeed(one, a.digest) && sameSeed(two, a.digest)).toBe(true);
    expect(b?.ok && sameSeed(one, b.digest)).toBe(false);
    expect(JSON.stringify(a)).not.toContain('a'.repeat(64)); // no file's hash in what a plan carries
  });

  it('names a file that could not be read', () => {
    expect(planSeed(spec({ userData: '/c/missing' }), digests)).toEqual({ ok: false, path: '/c/missing' });
  });

  it('rebuilds without --allow-replace only when nothing but the seed content changed', () => {
    expect(seedContentOnly([{ field: 'source', from: SEED_AS_BUILT, to: SEED_CHANGED }])).toBe(true);
    expect(seedContentOnly([{ field: 'source', from: 'file:/x', to: SEED_CHANGED }])).toBe(false);
    expect(
      seedContentOnly([
        { field: 'source', from: SEED_AS_BUILT, to: SEED_CHANGED },
        { field: 'format', from: 'qcow2', to: 'raw' },
      ]),
    ).toBe(false);
    expect(seedContentOnly([])).toBe(false);
  });
});

describe('a pool whose auth names a declared secret', () => {
  it('is created, started or changed after that secret (whose value the same apply may set)', async () => {
    const { diff, pool } = await import('./fixtures.js');
    const yaml = `version: 1
secrets:
  chap: { usage: iscsi, target: iqn.2026-01.dev.test:t, valueFile: /vr-test/chap }
pools:
  san: { type: iscsi-direct, source: { host: 127.0.0.1, device: iqn.2026-01.dev.test:t, initiator: iqn.2026-01.dev.test:i, auth: { type: chap, username: u, secret: chap } } }
`;
    const created = diff({ reason: 'a new pool', yaml, pools: [['san', null]], contents: [['/vr-test/chap', 'a'.repeat(64)]] });
    expect(created.actions.find((a) => a.id === 'pools.san')).toMatchObject({ kind: 'create', dependsOn: ['secrets.chap'] });
    // Defined but stopped (a start failed with the old value, say): started after the secret.
    const stopped = pool('san', {
      active: false,
      volumes: undefined,
      definition: {
        type: 'iscsi-direct',
        source: {
          hosts: [{ name: '127.0.0.1' }],
          device: 'iqn.2026-01.dev.test:t',
          initiator: 'iqn.2026-01.dev.test:i',
          auth: { type: 'chap', username: 'u', secretUsage: 'iqn.2026-01.dev.test:t' },
        },
      },
    });
    const started = diff({
      reason: 'a stopped pool',
      yaml,
      pools: [stopped],
      contents: [['/vr-test/chap', 'a'.repeat(64)]],
      inventory: [['pool:san', { type: 'pool', name: 'san', uuid: 'uuid-san', createdAt: '2026-01-01T00:00:00Z' }]],
    });
    expect(started.actions.find((a) => a.id === 'pools.san')).toMatchObject({ kind: 'update', dependsOn: ['secrets.chap'] });
  });
});

describe('files holding secrets that others can read', () => {
  it('are warned about in the plan (passphraseFile of an encrypted image, valueFile of a secret); 0600 is quiet', async () => {
    const { diff } = await import('./fixtures.js');
    const yaml = `version: 1
images:
  enc: { path: /vr-test/enc.qcow2, size: 1G, encryption: { format: luks, passphraseFile: /vr-test/pass } }
secrets:
  s: { usage: tls, valueFile: /vr-test/value }
`;
    const open = diff({
      reason: 'readable',
      yaml,
      absent: ['/vr-test/enc.qcow2'],
      contents: [
        ['/vr-test/pass', 'a'.repeat(64), 0o644],
        ['/vr-test/value', 'b'.repeat(64), 0o640],
      ],
    });
    expect(open.notes).toContain('warning: images.enc: passphraseFile /vr-test/pass can be read by others than its owner (mode 0644); chmod 600 it');
    expect(open.notes).toContain('warning: secrets.s: valueFile /vr-test/value can be read by others than its owner (mode 0640); chmod 600 it');
    const closed = diff({
      reason: 'private',
      yaml,
      absent: ['/vr-test/enc.qcow2'],
      contents: [
        ['/vr-test/pass', 'a'.repeat(64)],
        ['/vr-test/value', 'b'.repeat(64)],
      ],
    });
    expect(closed.notes.filter((n) => n.startsWith('warning'))).toEqual([]);
  });
});
