// Pure decisions: which actions the watch service may apply while others are refused, and
// whose records say an object is ours after an interrupted apply.
import { describe, expect, it } from 'vitest';
import { resolveImageRecord, volumeIsOurs, type ImageRecord, type VolumeRecord } from '../../src/reconcile/inventory.js';
import type { DesiredState, ImageSpec } from '../../src/reconcile/model.js';
import { withoutRefused } from '../../src/reconcile/partial.js';
import type { Action, Plan } from '../../src/reconcile/plan.js';

const img = (name: string, extra: Partial<ImageSpec> = {}): ImageSpec =>
  ({ name, location: { kind: 'path', path: `/x/${name}` }, source: { kind: 'blank' }, ...extra }) as ImageSpec;
const state = {
  images: {
    base: img('base'),
    top: img('top', { source: { kind: 'backing', image: 'base' } as ImageSpec['source'] }),
    topper: img('topper', { source: { kind: 'image', image: 'top' } as ImageSpec['source'] }),
    vol: img('vol', { location: { kind: 'pool', pool: 'p', volume: 'vol' } } as Partial<ImageSpec>),
    other: img('other'),
  },
  pools: {},
  vms: { web: { name: 'web', disks: [{ image: 'topper' }] }, db: { name: 'db', disks: [{ image: 'other' }] } },
  backups: {},
} as unknown as DesiredState;
const act = (id: string, kind: Action['kind'] = 'create'): Action => ({
  id,
  kind,
  code: 'new',
  resource: 'image',
  reason: '',
  destructive: false,
  changes: [],
  dependsOn: [],
  op: { type: 'none' },
});
const plan = (ids: string[], refused: string[]): Plan => ({
  formatVersion: 1,
  createdAt: '',
  stateDir: '',
  options: { allowReplace: false, prune: false },
  observed: {},
  notes: [],
  actions: ids.map((i) => act(i)),
  refusals: refused.map((id) => ({ id, message: 'no' })),
});

describe('withoutRefused', () => {
  const cases: { reason: string; actions: string[]; refused: string[]; kept: string[]; blocked: string[] }[] = [
    { reason: 'nothing refused: everything goes ahead', actions: ['images.base', 'images.other'], refused: [], kept: ['images.base', 'images.other'], blocked: [] },
    {
      reason: 'a refused base holds back its overlay, what copies the overlay, and the VM using that',
      actions: ['images.top', 'images.topper', 'vms.web', 'images.other', 'vms.db'],
      refused: ['images.base'],
      kept: ['images.other', 'vms.db'],
      blocked: ['images.top', 'images.topper', 'vms.web'],
    },
    { reason: 'a refused pool holds back its volumes only', actions: ['images.vol', 'images.other'], refused: ['pools.p'], kept: ['images.other'], blocked: ['images.vol'] },
    {
      reason: 'pruning an unrelated object is not held back',
      actions: ['inventory:image:/old.img', 'images.top'],
      refused: ['images.base'],
      kept: ['inventory:image:/old.img'],
      blocked: ['images.top'],
    },
  ];
  for (const c of cases) {
    it(c.reason, () => {
      const r = withoutRefused(plan(c.actions, c.refused), state);
      expect(r.plan.actions.map((a) => a.id)).toEqual(c.kept);
      expect(r.plan.refusals).toEqual([]);
      expect(r.blocked.map((b) => b.id)).toEqual(c.blocked);
      for (const b of r.blocked) expect(c.refused).toContain(b.because);
    });
  }
});

describe('records after an interrupted apply', () => {
  const file = { ino: 7, dev: 1, birth: '123' };
  const base: ImageRecord = { type: 'image', name: 'a', path: '/a', ino: 0, dev: 0, birth: '0', extents: [], createdAt: 't0', recorded: { source: 'old' } };
  it('a pending build that was published is ours, with its own recorded options', () => {
    const r = resolveImageRecord({ ...base, pending: { ...file, extents: [], recorded: { source: 'new' }, createdAt: 't1' } }, file);
    expect(r).toMatchObject({ ino: 7, birth: '123', recorded: { source: 'new' }, createdAt: 't1' });
    expect(r?.pending).toBeUndefined();
  });
  it('a pending build that never got published changes nothing', () => {
    const rec = { ...base, pending: { ino: 8, dev: 1, birth: '999', extents: [], recorded: {}, createdAt: 't1' } };
    expect(resolveImageRecord(rec, file)).toBe(rec);
  });
  const vol: VolumeRecord = { type: 'volume', name: 'v', pool: 'p', volume: 'v', key: '', path: '', status: 'building', createdAt: '', recorded: {} };
  it('a volume recorded building before libvirt made it (no key) proves nothing: not ours', () => expect(volumeIsOurs(vol, { key: '/p/v' })).toBe(false));
  it('a building volume with a key is ours only under that key', () => expect(volumeIsOurs({ ...vol, key: '/p/v' }, { key: '/p/other' })).toBe(false));
  it('a ready volume is ours only under its key', () => expect(volumeIsOurs({ ...vol, status: 'ready', key: '' }, { key: '/p/v' })).toBe(false));
  it('a file volume is ours only while its file has the recorded birth time', () => {
    const rec = { ...vol, status: 'ready' as const, key: '/p/v', birth: '111' };
    expect(volumeIsOurs(rec, { key: '/p/v', birth: '111' })).toBe(true);
    expect(volumeIsOurs(rec, { key: '/p/v', birth: '222' })).toBe(false);
    expect(volumeIsOurs({ ...rec, birth: undefined }, { key: '/p/v', birth: '222' })).toBe(true);
  });
});
