// The one duration grammar (--interval, backups' maxAge, hook timeouts), and the schema's copy of it.
import { readFileSync } from 'node:fs';
import { describe, expect, it } from 'vitest';
import { DURATION_PATTERN, formatDuration, parseDuration, TIMER_MAX_SECONDS } from '../../src/reconcile/durations.js';
import { SCHEMA_PATH } from '../../src/reconcile/schema.js';

describe('parseDuration', () => {
  const good: [reason: string, input: string, seconds: number][] = [
    ['seconds', '90s', 90],
    ['minutes', '5m', 300],
    ['hours', '1h', 3600],
    ['days', '2d', 172800],
    ['weeks', '1w', 604800],
    ['hours and minutes', '1h30m', 5400],
    ['every unit, largest first', '1w1d1h1m1s', 694861],
    ['a part may exceed the next unit', '90m', 5400],
    ['a zero part next to a non-zero one', '0h5m', 300],
    ['leading zeros', '007s', 7],
    ['six digits', '999999s', 999999],
  ];
  for (const [reason, input, want] of good) it(`${reason}: ${input}`, () => expect(parseDuration(input)).toBe(want));

  const bad: [reason: string, input: string][] = [
    ['no unit (seconds or days?)', '30'],
    ['zero', '0s'],
    ['all parts zero', '0h0m'],
    ['empty', ''],
    ['smallest unit first', '30m1h'],
    ['a unit twice', '1h1h'],
    ['space between parts', '1h 30m'],
    ['a word', '30 days'],
    ['a fraction', '1.5h'],
    ['upper-case unit', '5M'],
    ['negative', '-5m'],
    ['milliseconds are not a unit', '100ms'],
    ['seven digits', '1000000s'],
  ];
  for (const [reason, input] of bad) {
    it(`refuses ${reason}: ${JSON.stringify(input)}`, () => {
      const r = parseDuration(input);
      expect(r).toEqual({ error: expect.stringContaining(`(got ${JSON.stringify(input)})`) });
    });
  }
});

describe('formatDuration', () => {
  const cases: [string, number, string][] = [
    ['the longest timer', TIMER_MAX_SECONDS, '24d20h31m23s'],
    ['one unit', 300, '5m'],
    ['zero', 0, '0s'],
  ];
  for (const [reason, seconds, want] of cases) it(reason, () => expect(formatDuration(seconds)).toBe(want));
});

describe('the schema', () => {
  it("uses the parser's pattern for every duration field (maxAge, hooks.timeout, keep.within, verify.every)", () => {
    const text = readFileSync(SCHEMA_PATH, 'utf8');
    const schema = JSON.parse(text) as { $defs: Record<string, { pattern?: string }> };
    expect(schema.$defs.duration?.pattern).toBe(DURATION_PATTERN);
    // No other copy of a duration grammar (the old per-field patterns) is left in the schema.
    expect(text.match(/\[wdhms\]|\(m\|h|\(s\|m/g)).toHaveLength(1);
    expect(text.match(/"#\/\$defs\/duration"/g)).toHaveLength(4);
  });
});
