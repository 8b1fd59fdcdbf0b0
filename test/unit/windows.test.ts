// Maintenance windows, decided from the time alone: open or closed, when the next opens, and
// which actions of a plan wait (disruptive ones and what depends on them).
import { describe, expect, it } from 'vitest';
import type { Action, Plan } from '../../src/reconcile/plan.js';
import { holdForWindows, windowState } from '../../src/reconcile/windows.js';

const w = (schedule: string, durationSeconds: number, timezone = 'UTC') => ({ schedule, durationSeconds, timezone, origin: 'x.yaml:1:1' });
const at = (iso: string) => new Date(iso);

describe('windowState', () => {
  it('is open from each firing for its duration, and says when it closes', () => {
    const sat = w('0 2 * * 6', 4 * 3600); // Saturdays 02:00-06:00 UTC
    expect(windowState([sat], at('2026-11-28T03:00:00Z'))).toEqual({ open: true, closesAt: at('2026-11-28T06:00:00Z') });
    expect(windowState([sat], at('2026-11-28T02:00:00Z')).open).toBe(true);
    expect(windowState([sat], at('2026-11-28T06:00:00Z'))).toEqual({ open: false, opensAt: at('2026-12-05T02:00:00Z') });
    expect(windowState([sat], at('2026-11-27T23:00:00Z'))).toEqual({ open: false, opensAt: at('2026-11-28T02:00:00Z') });
  });
  it('on the days clocks change (Europe/Berlin), a 02:30 window is open when it fired and opens when it will (adversarial pass)', () => {
    const w230 = w('30 2 * * *', 3600, 'Europe/Berlin');
    // 25 October 2026, clocks go back: croner's firing that day is 01:30Z.
    expect(windowState([w230], at('2026-10-25T01:45:00Z')).open).toBe(true);
    expect(windowState([w230], at('2026-10-25T00:50:00Z')).opensAt).toEqual(at('2026-10-25T01:30:00Z'));
    // 28 March 2027, clocks go forward: it fires at 01:30Z that day, not first on the 29th.
    expect(windowState([w230], at('2027-03-28T01:10:00Z')).opensAt).toEqual(at('2027-03-28T01:30:00Z'));
  });
  it('takes the time zone of the schedule, and the earliest of several windows', () => {
    const berlin = w('0 2 * * *', 3600, 'Europe/Berlin'); // 02:00 in Berlin is 01:00 UTC in winter
    expect(windowState([berlin], at('2026-11-28T01:30:00Z')).open).toBe(true);
    expect(windowState([berlin], at('2026-11-28T02:30:00Z')).open).toBe(false);
    expect(windowState([w('0 4 * * *', 60), w('0 3 * * *', 60)], at('2026-11-28T00:00:00Z')).opensAt).toEqual(at('2026-11-28T03:00:00Z'));
  });
});

const act = (id: string, kind: Action['kind'], extra: Partial<Action> = {}): Action => ({
  id,
  resource: 'image',
  kind,
  code: kind === 'create' ? 'new' : kind === 'no-op' ? 'in-sync' : 'drift',
  reason: `${kind} ${id}`,
  destructive: kind === 'replace' || kind === 'delete',
  changes: [],
  dependsOn: [],
  op: { type: 'test' },
  ...extra,
});
const plan = (actions: Action[]): Plan => ({
  formatVersion: 1,
  createdAt: '',
  stateDir: '/s',
  options: { allowReplace: true, prune: true },
  observed: {},
  actions,
  refusals: [],
  notes: [],
});

describe('holdForWindows', () => {
  const closed = [w('0 2 * * 6', 3600)];
  const now = at('2026-11-27T12:00:00Z');
  it('outside a window: replaces, deletes and disruptive updates wait with their dependents; creates, updates and no-ops go on', () => {
    const p = holdForWindows(
      plan([
        act('images.base', 'replace'),
        act('images.overlay', 'update', { dependsOn: ['images.base'] }),
        act('images.top', 'create', { dependsOn: ['images.overlay'] }),
        act('inventory:image:/old', 'delete'),
        act('vms.web', 'update', { resource: 'domain', disruptive: true }),
        act('images.new', 'create'),
        act('images.grow', 'update'),
        act('images.same', 'no-op', { dependsOn: ['images.base'] }),
      ]),
      closed,
      now,
    );
    expect(p.actions.map((a) => a.id)).toEqual(['images.new', 'images.grow', 'images.same']);
    expect(p.waiting?.map((x) => [x.id, x.because ?? null, x.opensAt])).toEqual([
      ['images.base', null, '2026-11-28T02:00:00.000Z'],
      ['images.overlay', ['images.base'], '2026-11-28T02:00:00.000Z'],
      ['images.top', ['images.overlay'], '2026-11-28T02:00:00.000Z'],
      ['inventory:image:/old', null, '2026-11-28T02:00:00.000Z'],
      ['vms.web', null, '2026-11-28T02:00:00.000Z'],
    ]);
  });
  it('inside a window, or without windows, the plan is unchanged', () => {
    const p = plan([act('images.base', 'replace')]);
    expect(holdForWindows(p, closed, at('2026-11-28T02:30:00Z'))).toBe(p);
    expect(holdForWindows(p, undefined, now)).toBe(p);
    expect(holdForWindows(p, [], now)).toBe(p);
  });
});
