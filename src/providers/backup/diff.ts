// Backup schedules against the record of their runs. Pure: "now" is an argument.
import { Cron } from 'croner';
import type { BackupSpec } from '../../reconcile/model.js';

/** Schedules whose last success is older than their most recent due time. */
export function overdue(specs: BackupSpec[], lastSuccess: Record<string, string>, now = new Date()): string[] {
  const notes: string[] = [];
  for (const s of specs) {
    const cron = new Cron(s.schedule, { paused: true, timezone: s.timezone });
    const last = lastSuccess[s.name];
    if (!last) {
      notes.push(`backups.${s.name} has never run (next due ${cron.nextRun(now)?.toISOString()}; \`reconcile backup run ${s.name}\` runs it now)`);
      continue;
    }
    const due = cron.nextRun(new Date(last));
    if (due && due.getTime() <= now.getTime()) notes.push(`backups.${s.name} is overdue: last success ${last}, a run was due ${due.toISOString()}`);
  }
  return notes;
}
