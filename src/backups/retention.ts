// Which backups a schedule keeps: the vocabulary of restic `forget` and Proxmox
// `prune-backups`. Each rule walks the backups from the newest and keeps the newest one of each
// period (hour, day, ISO week, month, year) until it has kept its count; `last` keeps the
// newest N; `within` keeps everything made within that long of the newest backup. Rules
// combine (a backup any rule keeps survives); the newest backup and protected ones always
// survive. Periods are calendar periods in the schedule's time zone. A backup that a kept
// incremental one depends on (its parent, and so on up to the full one) is kept with it.

export interface KeepPolicy {
  last?: number;
  hourly?: number;
  daily?: number;
  weekly?: number;
  monthly?: number;
  yearly?: number;
  /** seconds before the newest backup */
  withinSeconds?: number;
}

export interface Verdict {
  /** id -> the rules that keep it (e.g. "daily 2026-11-27", "newest", "protected") */
  keep: Map<string, string[]>;
  /** oldest first, with why */
  remove: { id: string; why: string }[];
}

const PERIODS = ['hourly', 'daily', 'weekly', 'monthly', 'yearly'] as const;
type Period = (typeof PERIODS)[number];

/**
 * The verdict for one schedule's backups. `maxAgeSeconds` (the older `maxAge:`) still removes
 * what is older than that, whatever keeps it — never the newest nor a protected one.
 */
export function retention(
  /** parent: the backup an incremental one holds the changes since (it cannot be read without it) */
  runs: { id: string; at: string; protected?: boolean; parent?: string }[],
  policy: KeepPolicy | undefined,
  o: { now: Date; maxAgeSeconds?: number; timeZone?: string },
): Verdict {
  const sorted = [...runs].sort((a, b) => b.at.localeCompare(a.at));
  const keep = new Map<string, string[]>();
  const why = (id: string, reason: string) => keep.set(id, [...(keep.get(id) ?? []), reason]);
  if (!sorted.length) return { keep, remove: [] };
  why(sorted[0]!.id, 'newest');
  for (const r of sorted) if (r.protected) why(r.id, 'protected');
  if (!policy) {
    for (const r of sorted) why(r.id, 'no keep rule');
  } else {
    for (const [i, r] of sorted.slice(0, policy.last ?? 0).entries()) why(r.id, `last ${i + 1}`);
    for (const p of PERIODS) {
      const n = policy[p];
      if (!n) continue;
      let last: string | undefined;
      let kept = 0;
      for (const r of sorted) {
        if (kept >= n) break;
        const bucket = periodOf(new Date(r.at), p, o.timeZone);
        if (bucket === last) continue;
        last = bucket;
        kept++;
        why(r.id, `${p} ${bucket}`);
      }
    }
    if (policy.withinSeconds !== undefined) {
      const newest = Date.parse(sorted[0]!.at);
      for (const r of sorted) if (newest - Date.parse(r.at) <= policy.withinSeconds * 1000) why(r.id, 'within');
    }
  }
  const remove: Verdict['remove'] = [];
  for (const r of [...sorted].reverse()) {
    const reasons = keep.get(r.id) ?? [];
    const pinned = reasons.includes('newest') || reasons.includes('protected');
    const old = o.maxAgeSeconds !== undefined && o.now.getTime() - Date.parse(r.at) > o.maxAgeSeconds * 1000;
    if (pinned) continue;
    if (old) {
      keep.delete(r.id);
      remove.push({ id: r.id, why: 'older than maxAge' });
    } else if (!reasons.length) remove.push({ id: r.id, why: 'no keep rule keeps it' });
  }
  // Whatever a kept backup is read through stays: newest first, so each base names the newest
  // backup that needs it.
  const byId = new Map(sorted.map((r) => [r.id, r]));
  for (const r of sorted) {
    if (!keep.has(r.id)) continue;
    for (let p = byId.get(r.parent ?? ''), seen = 0; p && seen < sorted.length; p = byId.get(p.parent ?? ''), seen++) {
      if (keep.get(p.id)?.some((x) => x.startsWith('base of '))) break;
      why(p.id, `base of ${r.id}`);
    }
  }
  return { keep, remove: remove.filter((x) => !keep.has(x.id)) };
}

/** The calendar period a time falls in, in a time zone (default: this host's): "2026-W48", "2026-11-27T08". */
export function periodOf(d: Date, p: Period, timeZone?: string): string {
  const parts = Object.fromEntries(
    new Intl.DateTimeFormat('en-CA', { timeZone, year: 'numeric', month: '2-digit', day: '2-digit', hour: '2-digit', hourCycle: 'h23' })
      .formatToParts(d)
      .map((x) => [x.type, x.value]),
  ) as Record<string, string>;
  const { year, month, day, hour } = parts as { year: string; month: string; day: string; hour: string };
  switch (p) {
    case 'hourly':
      return `${year}-${month}-${day}T${hour}`;
    case 'daily':
      return `${year}-${month}-${day}`;
    case 'weekly':
      return isoWeek(Number(year), Number(month), Number(day));
    case 'monthly':
      return `${year}-${month}`;
    case 'yearly':
      return year;
  }
}

/** ISO 8601 week of a calendar date: weeks start on Monday; week 1 holds the year's first Thursday. */
function isoWeek(y: number, m: number, d: number): string {
  const t = new Date(Date.UTC(y, m - 1, d));
  const dow = t.getUTCDay() || 7;
  t.setUTCDate(t.getUTCDate() + 4 - dow); // the Thursday of this week decides its year
  const weekYear = t.getUTCFullYear();
  const week = Math.ceil(((t.getTime() - Date.UTC(weekYear, 0, 1)) / 86400000 + 1) / 7);
  return `${weekYear}-W${String(week).padStart(2, '0')}`;
}
