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
  const t = now.getTime();
  for (const w of windows) {
    const cron = new Cron(w.schedule, { paused: true, timezone: w.timezone });
    const d = w.durationSeconds * 1000;
    // Firings around now: the next after (now - duration) and after now, and, because croner
    // started inside a day whose clocks change skips that day's firing, those of a walk begun
    // a day earlier.
    const runs = [cron.nextRun(new Date(t - d)), cron.nextRun(now), ...cron.nextRuns(64, new Date(t - d - 86_400_000))].filter((r): r is Date => !!r);
    for (const r of runs) {
      // Open now if it fired within the last `duration`.
      if (r.getTime() <= t && r.getTime() + d > t) {
        const end = new Date(r.getTime() + d);
        if (!closesAt || end > closesAt) closesAt = end;
      }
      if (r.getTime() > t && (!opensAt || r < opensAt)) opensAt = r;
    }
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
