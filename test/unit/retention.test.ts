// Retention as restic `forget` and Proxmox `prune-backups` decide it, against tables of
// timestamps and the survivors those tools keep (in UTC, so the table does not depend on the host).
import { describe, expect, it } from 'vitest';
import { periodOf, retention, type KeepPolicy } from '../../src/backups/retention.js';

const runs = (...ats: string[]) => ats.map((at) => ({ id: at, at }));
const now = new Date('2026-12-01T00:00:00Z');
const kept = (r: { id: string; at: string; protected?: boolean }[], p: KeepPolicy | undefined, maxAgeSeconds?: number) =>
  [...retention(r, p, { now, timeZone: 'UTC', maxAgeSeconds }).keep.keys()].sort();

// Two backups a day from 2026-11-01 to 2026-11-30 (06:00 and 18:00 UTC).
const twiceDaily = Array.from({ length: 30 }, (_, i) => {
  const d = `2026-11-${String(i + 1).padStart(2, '0')}`;
  return [`${d}T06:00:00.000Z`, `${d}T18:00:00.000Z`];
}).flat();

describe('retention (restic forget semantics)', () => {
  it('last N keeps the newest N', () => {
    expect(kept(runs(...twiceDaily), { last: 3 })).toEqual(['2026-11-29T18:00:00.000Z', '2026-11-30T06:00:00.000Z', '2026-11-30T18:00:00.000Z']);
  });

  it('daily N keeps the newest backup of each of the newest N days that have one', () => {
    expect(kept(runs(...twiceDaily), { daily: 3 })).toEqual(['2026-11-28T18:00:00.000Z', '2026-11-29T18:00:00.000Z', '2026-11-30T18:00:00.000Z']);
  });

  it('weekly uses ISO weeks (Monday to Sunday), monthly and yearly calendar periods; rules combine', () => {
    // Nov 2026: Mondays are the 2nd, 9th, 16th, 23rd, 30th — the 30th opens a week of its own.
    expect(kept(runs(...twiceDaily), { weekly: 3 })).toEqual(['2026-11-22T18:00:00.000Z', '2026-11-29T18:00:00.000Z', '2026-11-30T18:00:00.000Z']);
    const years = runs(
      '2024-06-01T00:00:00.000Z',
      '2024-12-31T00:00:00.000Z',
      '2025-03-01T00:00:00.000Z',
      '2025-11-30T00:00:00.000Z',
      '2026-01-15T00:00:00.000Z',
      '2026-11-30T00:00:00.000Z',
    );
    expect(kept(years, { yearly: 2 })).toEqual(['2025-11-30T00:00:00.000Z', '2026-11-30T00:00:00.000Z']);
    expect(kept(years, { monthly: 2, yearly: 3 })).toEqual(['2024-12-31T00:00:00.000Z', '2025-11-30T00:00:00.000Z', '2026-01-15T00:00:00.000Z', '2026-11-30T00:00:00.000Z']);
    expect(kept(runs(...twiceDaily), { last: 1, daily: 2, weekly: 2 })).toEqual(['2026-11-29T18:00:00.000Z', '2026-11-30T18:00:00.000Z']);
    expect(kept(runs(...twiceDaily), { daily: 1, weekly: 3 })).toEqual(['2026-11-22T18:00:00.000Z', '2026-11-29T18:00:00.000Z', '2026-11-30T18:00:00.000Z']);
  });

  it('hourly counts hours that have a backup; within keeps everything within that long of the newest', () => {
    const h = runs('2026-11-30T10:05:00.000Z', '2026-11-30T10:50:00.000Z', '2026-11-30T11:10:00.000Z', '2026-11-30T13:00:00.000Z');
    expect(kept(h, { hourly: 2 })).toEqual(['2026-11-30T11:10:00.000Z', '2026-11-30T13:00:00.000Z']);
    expect(kept(h, { withinSeconds: 3 * 3600 })).toEqual(['2026-11-30T10:05:00.000Z', '2026-11-30T10:50:00.000Z', '2026-11-30T11:10:00.000Z', '2026-11-30T13:00:00.000Z']);
    expect(kept(h, { withinSeconds: 2 * 3600 })).toEqual(['2026-11-30T11:10:00.000Z', '2026-11-30T13:00:00.000Z']);
  });

  it('the newest and protected backups always survive, also past maxAge; maxAge removes what rules keep', () => {
    const r = [...runs('2026-01-01T00:00:00.000Z', '2026-06-01T00:00:00.000Z', '2026-11-30T00:00:00.000Z'), { id: 'p', at: '2025-01-01T00:00:00.000Z', protected: true }];
    expect(kept(r, { last: 1 })).toEqual(['2026-11-30T00:00:00.000Z', 'p']);
    expect(kept(r, { monthly: 12 }, 90 * 86400)).toEqual(['2026-11-30T00:00:00.000Z', 'p']);
    expect(kept(runs('2020-01-01T00:00:00.000Z'), { last: 1 }, 86400)).toEqual(['2020-01-01T00:00:00.000Z']);
    const v = retention(r, { last: 1 }, { now, timeZone: 'UTC' });
    expect(v.keep.get('2026-11-30T00:00:00.000Z')).toEqual(['newest', 'last 1']);
    expect(v.remove).toEqual([
      { id: '2026-01-01T00:00:00.000Z', why: 'no keep rule keeps it' },
      { id: '2026-06-01T00:00:00.000Z', why: 'no keep rule keeps it' },
    ]);
  });

  it('no keep rule keeps everything (maxAge alone still removes the old)', () => {
    expect(kept(runs(...twiceDaily.slice(0, 4)), undefined)).toHaveLength(4);
    expect(kept(runs('2026-01-01T00:00:00.000Z', '2026-11-30T00:00:00.000Z'), undefined, 30 * 86400)).toEqual(['2026-11-30T00:00:00.000Z']);
  });

  it('periods are calendar periods in the time zone given', () => {
    const d = new Date('2026-12-31T23:30:00Z');
    expect(periodOf(d, 'daily', 'UTC')).toBe('2026-12-31');
    expect(periodOf(d, 'daily', 'Europe/Berlin')).toBe('2027-01-01');
    expect(periodOf(d, 'weekly', 'UTC')).toBe('2026-W53');
    expect(periodOf(new Date('2027-01-04T12:00:00Z'), 'weekly', 'UTC')).toBe('2027-W01');
    expect(periodOf(new Date('2024-12-30T12:00:00Z'), 'weekly', 'UTC')).toBe('2025-W01');
    expect(periodOf(d, 'hourly', 'America/New_York')).toBe('2026-12-31T18');
  });

  it('keeps every backup a kept incremental one is read through, up to its full one, whatever else removes it', () => {
    // Two chains: full F1 with increments I2, I3 (ISO week 47), full F4 with increment I5 (week 48).
    const chain = [
      { id: 'F1', at: '2026-11-20T01:00:00.000Z' },
      { id: 'I2', at: '2026-11-21T01:00:00.000Z', parent: 'F1' },
      { id: 'I3', at: '2026-11-22T01:00:00.000Z', parent: 'I2' },
      { id: 'F4', at: '2026-11-27T01:00:00.000Z' },
      { id: 'I5', at: '2026-11-28T01:00:00.000Z', parent: 'F4' },
    ];
    const v = (p: KeepPolicy, maxAgeSeconds?: number) => retention(chain, p, { now, timeZone: 'UTC', maxAgeSeconds });
    // daily 1 keeps I5 only: F4 stays as its base, the old chain goes.
    expect([...v({ daily: 1 }).keep.keys()].sort()).toEqual(['F4', 'I5']);
    expect(v({ daily: 1 }).keep.get('F4')).toEqual(['base of I5']);
    expect(v({ daily: 1 }).remove.map((r) => r.id)).toEqual(['F1', 'I2', 'I3']);
    // weekly 2 keeps I3 too (last week's newest): it cannot be read without I2 and F1.
    expect([...v({ weekly: 2 }).keep.keys()].sort()).toEqual(['F1', 'F4', 'I2', 'I3', 'I5']);
    expect(v({ weekly: 2 }).keep.get('F1')).toEqual(['base of I3']);
    // maxAge (3 days before 12-01) removes old backups, but not F4, the base of one that stays.
    const aged = v({ last: 5 }, 3 * 86400);
    expect(aged.remove.map((r) => r.id)).toEqual(['F1', 'I2', 'I3']);
    expect(v({ last: 1 }, 3 * 86400).keep.get('F4')).toEqual(['base of I5']);
    // A protected increment keeps its chain.
    const prot = retention(
      chain.map((r) => (r.id === 'I2' ? { ...r, protected: true } : r)),
      { last: 1 },
      { now, timeZone: 'UTC' },
    );
    expect([...prot.keep.keys()].sort()).toEqual(['F1', 'F4', 'I2', 'I5']);
  });
});
