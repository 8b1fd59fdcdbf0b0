// When a schedule is suspended (Harvester's maxFailure): after maxFailures failed runs in a
// row it stops firing until `backup resume NAME` or a change to its YAML. Pure.
import { createHash } from 'node:crypto';
import type { BackupSpec } from '../reconcile/model.js';

/** Failed runs of this schedule since its last successful one. */
export function consecutiveFailures(runs: { schedule: string; at: string; status?: string }[], schedule: string): number {
  let n = 0;
  for (const r of runs.filter((x) => x.schedule === schedule).sort((a, b) => b.at.localeCompare(a.at))) {
    if (r.status !== 'failed') break;
    n++;
  }
  return n;
}

/** What a suspension was made under: a change to the schedule's YAML (anything but where it was read) resumes it. */
export function scheduleDigest(spec: BackupSpec): string {
  const { origin: _origin, ...rest } = spec;
  return createHash('sha256').update(JSON.stringify(rest)).digest('hex').slice(0, 16);
}

export type Suspensions = Record<string, { at: string; failures: number; digest: string }>;

/** The schedules suspended now: each recorded suspension whose schedule is unchanged since. */
export function suspendedSchedules(specs: BackupSpec[], suspended: Suspensions | undefined): Map<string, { at: string; failures: number }> {
  const out = new Map<string, { at: string; failures: number }>();
  for (const s of specs) {
    const sus = suspended?.[s.name];
    if (sus && sus.digest === scheduleDigest(s)) out.set(s.name, { at: sus.at, failures: sus.failures });
  }
  return out;
}
