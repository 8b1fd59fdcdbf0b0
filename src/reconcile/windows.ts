// Maintenance windows (Argo CD's sync windows): while none is open, disruptive actions wait —
// a replace, a delete (prune), a running VM's change that takes effect only at its restart —
// with everything that depends on them; the rest of the plan is applied as usual. Pure: the
// time is given.
import { Cron } from 'croner';
import type { MaintenanceWindow } from './model.js';
import { isChange, isDestructive, type Action, type Plan } from './plan.js';

export interface WindowState {
  open: boolean;
  /** while open: when the window open now closes (the latest, if several overlap) */
  closesAt?: Date;
  /** while closed: when the next one opens */
  opensAt?: Date;
}

export function windowState(windows: MaintenanceWindow[], now: Date): WindowState {
  let closesAt: Date | undefined;
  let opensAt: Date | undefined;
  for (const w of windows) {
    const cron = new Cron(w.schedule, { paused: true, timezone: w.timezone });
    // Open now if it fired within the last `duration`: its next run after (now - duration) is not later than now.
    const since = cron.nextRun(new Date(now.getTime() - w.durationSeconds * 1000));
    if (since && since.getTime() <= now.getTime()) {
      const end = new Date(since.getTime() + w.durationSeconds * 1000);
      if (!closesAt || end > closesAt) closesAt = end;
    }
    const next = cron.nextRun(now);
    if (next && (!opensAt || next < opensAt)) opensAt = next;
  }
  return closesAt ? { open: true, closesAt } : { open: false, opensAt };
}

/** What waits for a window: destroys or replaces something, or is marked disruptive by its kind. */
export const isDisruptive = (a: Action) => isChange(a) && (isDestructive(a) || a.disruptive === true);

/**
 * The plan with its disruptive actions, and those that depend on them, moved to `waiting`
 * when no window is open. Unchanged without windows, or while one is open.
 */
export function holdForWindows(plan: Plan, windows: MaintenanceWindow[] | undefined, now: Date): Plan {
  if (!windows?.length) return plan;
  const s = windowState(windows, now);
  if (s.open) return plan;
  const held = new Set(plan.actions.filter(isDisruptive).map((a) => a.id));
  if (!held.size) return plan;
  // Dependents wait too: an overlay on an image being replaced, a disk on a pool being deleted.
  for (let grew = true; grew; ) {
    grew = false;
    for (const a of plan.actions)
      if (!held.has(a.id) && isChange(a) && a.dependsOn.some((d) => held.has(d))) {
        held.add(a.id);
        grew = true;
      }
  }
  const opensAt = s.opensAt?.toISOString();
  return {
    ...plan,
    actions: plan.actions.filter((a) => !held.has(a.id)),
    waiting: plan.actions
      .filter((a) => held.has(a.id))
      .map((a) => ({
        id: a.id,
        kind: a.kind,
        reason: a.reason,
        destructive: isDestructive(a),
        ...(isDisruptive(a) ? {} : { because: a.dependsOn.filter((d) => held.has(d)) }),
        ...(opensAt ? { opensAt } : {}),
      })),
  };
}
