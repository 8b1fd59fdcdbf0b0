// Size strings as qemu-img reads them (lower-case single-letter suffixes too), and the schema's copy of the pattern.
import { readFileSync } from 'node:fs';
import { describe, expect, it } from 'vitest';
import { SCHEMA_PATH } from '../../src/reconcile/schema.js';
import { parseSize, SIZE_PATTERN } from '../../src/reconcile/sizes.js';

const KiB = 1024;
const GiB = 1024 ** 3;

describe('parseSize', () => {
  const good: [reason: string, input: string | number, bytes: number][] = [
    ['a number is bytes', 4096, 4096],
    ['a string of digits is bytes', '4096', 4096],
    ['B is bytes', '512B', 512],
    ['b is bytes, as qemu-img reads it', '512b', 512],
    ['K is KiB', '64K', 64 * KiB],
    ['k is KiB, as qemu-img reads it', '64k', 64 * KiB],
    ['m is MiB', '2m', 2 * 1024 ** 2],
    ['g is GiB', '30g', 30 * GiB],
    ['t is TiB', '1t', 1024 ** 4],
    ['p is PiB', '1p', 1024 ** 5],
    ['a fraction of a lower-case unit', '1.5g', 1.5 * GiB],
    ['G and g are the same', '30G', 30 * GiB],
    ['GiB is 1024-based', '30GiB', 30 * GiB],
    ['GB is 1000-based', '30GB', 30 * 1000 ** 3],
    ['KB is 1000-based', '4KB', 4000],
    ['a space before the unit', '2 TiB', 2 * 1024 ** 4],
  ];
  for (const [reason, input, want] of good) it(`${reason}: ${JSON.stringify(input)}`, () => expect(parseSize(input)).toBe(want));

  const bad: [reason: string, input: unknown][] = [
    ['lower-case kb (qemu-img has no such unit; KB would be 1000)', '4kb'],
    ['lower-case gib', '1gib'],
    ['mixed-case Gb', '1Gb'],
    ['exabytes are beyond every format', '1E'],
    ['a word', '30 gigs'],
    ['a fraction of a byte', '1.5'],
    ['a fraction of a byte through a unit', '0.3K'],
    ['negative', '-1'],
    ['exponent notation', '1e9'],
    ['a unit alone', 'g'],
    ['a negative number', -1],
    ['too large', '99999999999p'],
  ];
  for (const [reason, input] of bad) it(`refuses ${reason}: ${JSON.stringify(input)}`, () => expect(typeof parseSize(input)).toBe('object'));
});

describe('the schema', () => {
  it("uses the parser's pattern for sizes", () => {
    const schema = JSON.parse(readFileSync(SCHEMA_PATH, 'utf8')) as { $defs: Record<string, { pattern?: string }> };
    expect(schema.$defs.size?.pattern).toBe(SIZE_PATTERN);
  });
});
