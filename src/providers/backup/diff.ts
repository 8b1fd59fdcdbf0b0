// Backup schedules against the record of their runs. Pure: "now" is an argument.
import { Cron } from 'croner';
import type { BackupSpec } from '../../reconcile/model.js';
import { suspendedSchedules, type Suspensions } from '../../backups/suspension.js';

/** Schedules whose last success is older than their most recent due time, and those whose last run failed. */
export function overdue(specs: BackupSpec[], lastSuccess: Record<string, string>, now = new Date(), lastFailure: Record<string, { at: string; error: string }> = {}): string[] {
  const notes: string[] = [];
  for (const s of specs) {
    const cron = new Cron(s.schedule, { paused: true, timezone: s.timezone });
    const last = lastSuccess[s.name];
    const failed = lastFailure[s.name];
    // A failure after the last success (or with none) is said first: it is what needs a look.
    if (failed && (!last || failed.at > last))
      notes.push(`backups.${s.name}: its last run failed (${failed.at}): ${failed.error}${last ? ` — last success ${last}` : ' — it has never succeeded'}`);
    if (!last) {
      if (!failed) notes.push(`backups.${s.name} has never run (next due ${cron.nextRun(now)?.toISOString()}; \`reconcile backup run ${s.name}\` runs it now)`);
      continue;
    }
    const due = cron.nextRun(new Date(last));
    if (due && due.getTime() <= now.getTime()) notes.push(`backups.${s.name} is overdue: last success ${last}, a run was due ${due.toISOString()}`);
  }
  return notes;
}

/** A note for each suspended schedule: why, and how it runs again. */
export function suspendedNotes(specs: BackupSpec[], suspended: Suspensions | undefined): string[] {
  return [...suspendedSchedules(specs, suspended)].map(
    ([name, s]) =>
      `backups.${name} is SUSPENDED after ${s.failures} failed runs in a row (since ${s.at}): it does not run on its schedule until \`reconcile backup resume ${name}\` or a change to it`,
  );
}
