// Pure decisions behind wipe and cloud-init seeds: which byte ranges a wipe writes, when a
// record's wipe changes, what a seed's digest covers, and which rebuilds need no flag.
import { describe, expect, it } from 'vitest';
import { planSeed, seedContentOnly, seedIdentity } from '../../src/providers/common/cloud-init.js';
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
  const digests = new Map([
    ['/c/user-data', 'a'.repeat(64)],
    ['/c/meta-data', 'b'.repeat(64)],
    ['/c/net', 'c'.repeat(64)],
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
    const b = planSeed(spec({ userData: '/c/user-data', metaData: '/c/meta-data' }), new Map([...digests, ['/c/meta-data', 'd'.repeat(64)]]));
    expect(a?.ok && b?.ok && a.digest !== b.digest).toBe(true);
    expect(a?.ok && seedIdentity(a.digest)).toMatch(/^cloudInit:[0-9a-f]{16}$/);
  });

  it('names a file that could not be read', () => {
    expect(planSeed(spec({ userData: '/c/missing' }), digests)).toEqual({ ok: false, path: '/c/missing' });
  });

  it('rebuilds without --allow-replace only when nothing but the seed content changed', () => {
    expect(seedContentOnly([{ field: 'source', from: 'cloudInit:1', to: 'cloudInit:2' }])).toBe(true);
    expect(seedContentOnly([{ field: 'source', from: 'file:/x', to: 'cloudInit:2' }])).toBe(false);
    expect(
      seedContentOnly([
        { field: 'source', from: 'cloudInit:1', to: 'cloudInit:2' },
        { field: 'format', from: 'qcow2', to: 'raw' },
      ]),
    ).toBe(false);
    expect(seedContentOnly([])).toBe(false);
  });
});
