// When a pruned pool's storage goes with it: the pure rule (src/providers/pool/diff.ts).
import { describe, expect, it } from 'vitest';
import { storageFate } from '../../src/providers/pool/diff.js';
import type { PoolRecord } from '../../src/reconcile/inventory.js';
import type { DirectoryContent } from '../../src/providers/observe.js';
import { pool } from './fixtures.js';

const rec = (o: Partial<PoolRecord>): PoolRecord => ({ type: 'pool', name: 'p', uuid: 'u', createdAt: '2026-01-01T00:00:00Z', path: '/pools/p', ...o });
const dirs = (c?: DirectoryContent) => new Map<string, DirectoryContent>(c ? [['/pools/p', c]] : []);
const active = pool('p', { path: '/pools/p', vols: { 'a.qcow2': '/pools/p/a.qcow2', 'b.img': '/pools/p/b.img' } });
const inactive = { ...pool('p', { path: '/pools/p' }), active: false, volumes: undefined };
const none = () => false;
const all = () => true;

describe('storageFate', () => {
  it.each([
    ['not declared', rec({ storage: 'made' }), active, dirs(), all, /deleteStorage was not declared/],
    ['found, not made', rec({ storage: 'found', deleteStorage: true }), active, dirs(), all, /it was there before the pool, reconcile did not make it/],
    ['older record: unknown', rec({ deleteStorage: true }), active, dirs(), all, /not recorded that reconcile made it/],
    ['made, but the directory not recorded', rec({ storage: 'made', deleteStorage: true }), active, dirs(), all, /the directory reconcile made was not recorded/],
    [
      'holds something not being deleted',
      rec({ storage: 'made', storageBirth: '1', deleteStorage: true }),
      active,
      dirs(),
      (v: string) => v === 'a.qcow2',
      /holds 1 thing\(s\) reconcile is not deleting \(b\.img\)/,
    ],
    [
      'inactive, content unknown',
      rec({ storage: 'made', storageBirth: '1', deleteStorage: true }),
      inactive,
      dirs({ kind: 'unreadable', why: 'EACCES' }),
      all,
      /inactive and what it holds cannot be read/,
    ],
    [
      'inactive, its directory holds a file',
      rec({ storage: 'made', storageBirth: '1', deleteStorage: true }),
      inactive,
      dirs({ kind: 'directory', entries: ['x'] }),
      none,
      /holds 1 thing\(s\)/,
    ],
  ])('kept: %s', (_what, r, obs, d, pruned, why) => {
    const f = storageFate(r, obs, d, pruned);
    expect(f.delete).toBe(false);
    expect(f.delete ? '' : f.why).toMatch(why);
  });

  it.each([
    ['active, everything in it pruned', active, dirs(), all],
    ['inactive, empty directory', inactive, dirs({ kind: 'directory', entries: [] }), none],
    ['inactive, directory already gone', inactive, dirs({ kind: 'missing' }), none],
  ])('deleted: %s', (_what, obs, d, pruned) => {
    expect(storageFate(rec({ storage: 'made', storageBirth: '1', deleteStorage: true }), obs, d, pruned)).toEqual({ delete: true });
  });

  it('never for a pool type without storage here', () => {
    const iscsi = { ...active, definition: { ...active.definition, type: 'iscsi' as const } };
    expect(storageFate(rec({ storage: 'made', storageBirth: '1', deleteStorage: true }), iscsi, dirs(), all)).toMatchObject({ delete: false, why: /iscsi pools have none here/ });
  });
});

describe('storageFate of an fs pool', () => {
  const fsPool = (vols: Record<string, string>) => {
    const p = pool('p', { path: '/pools/p', vols });
    return { ...p, definition: { ...p.definition, type: 'fs' as const } };
  };
  const made = { device: '/dev/loop9', type: 'ext4', uuid: 'abc' };

  it('erases the filesystem it made once it holds nothing but lost+found, keeping a mount point it found', () => {
    expect(storageFate(rec({ storage: 'found', deleteStorage: true, filesystem: made }), fsPool({ 'lost+found': '/pools/p/lost+found' }), dirs(), none)).toEqual({
      delete: true,
      keepDirectory: true,
    });
    expect(storageFate(rec({ storage: 'made', storageBirth: '1', deleteStorage: true, filesystem: made }), fsPool({ 'lost+found': '/pools/p/lost+found' }), dirs(), none)).toEqual({
      delete: true,
    });
  });

  it('keeps it while it holds a file, when unmounted (its content unseen), and when reconcile did not make it', () => {
    const kept = (r: PoolRecord, obs: Parameters<typeof storageFate>[1]) => storageFate(r, obs, dirs({ kind: 'directory', entries: [] }), none);
    expect(kept(rec({ storage: 'found', deleteStorage: true, filesystem: made }), fsPool({ 'lost+found': '', 'notes.txt': '' }))).toMatchObject({
      delete: false,
      why: /notes\.txt/,
    });
    expect(kept(rec({ storage: 'found', deleteStorage: true, filesystem: made }), { ...fsPool({}), active: false, volumes: undefined })).toMatchObject({
      delete: false,
      why: /inactive, so what its filesystem holds cannot be read/,
    });
    // lost+found counts as content when no filesystem of reconcile's is recorded.
    expect(kept(rec({ storage: 'made', storageBirth: '1', deleteStorage: true }), fsPool({ 'lost+found': '' }))).toMatchObject({ delete: false, why: /lost\+found/ });
    expect(kept(rec({ storage: 'found', deleteStorage: true }), fsPool({}))).toMatchObject({ delete: false, why: /there before the pool/ });
  });
});
