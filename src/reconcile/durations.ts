// The one duration grammar: `--interval`, backups' `maxAge` and hook `timeout` (the schema's
// $defs.duration pattern is DURATION_PATTERN; a unit test keeps the two the same).
//
// A duration is one or more whole numbers, each with a unit — w (7 days), d, h, m, s — largest
// unit first, each unit at most once: "90s", "5m", "1h30m", "2d", "1w2d". A unit is required
// ("30" could be seconds or days), and the total must be more than zero (a zero timeout or
// interval would mean "at once, forever"). At most six digits per number, so every duration
// the pattern accepts is a safe integer of seconds.

const SECONDS: Record<string, number> = { w: 604800, d: 86400, h: 3600, m: 60, s: 1 };

export const DURATION_PATTERN = '^(?!(0+[wdhms])*$)([0-9]{1,6}w)?([0-9]{1,6}d)?([0-9]{1,6}h)?([0-9]{1,6}m)?([0-9]{1,6}s)?$';
const DURATION_RE = new RegExp(DURATION_PATTERN);
export const DURATION_HELP = 'a duration: whole numbers with units w d h m s, largest first, such as 90s, 5m, 1h30m, 2d or 1w';

/**
 * The longest duration a timer can wait: Node's setTimeout takes at most 2^31-1 ms and fires
 * at once beyond that, so a longer interval or hook timeout would loop or kill at once.
 */
export const TIMER_MAX_SECONDS = Math.floor((2 ** 31 - 1) / 1000);

/** Seconds, or a message saying what is allowed. */
export function parseDuration(text: string): number | { error: string } {
  if (!DURATION_RE.test(text)) return { error: `must be ${DURATION_HELP} (got ${JSON.stringify(text)})` };
  let total = 0;
  for (const [, n, unit] of text.matchAll(/([0-9]+)([wdhms])/g)) total += Number(n) * SECONDS[unit!]!;
  return total;
}

/** For messages: 1490400 -> "17d6h". */
export function formatDuration(seconds: number): string {
  let rest = seconds;
  let out = '';
  for (const [unit, s] of Object.entries(SECONDS)) {
    if (unit === 'w') continue; // "24d" reads better than "3w3d"
    const n = Math.floor(rest / s);
    if (n) out += `${n}${unit}`;
    rest -= n * s;
  }
  return out || '0s';
}
