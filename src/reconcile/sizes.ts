// Size strings as the README's configuration reference defines them: K M G T P and KiB..PiB
// are powers of 1024 (as qemu-img reads them); KB MB GB TB PB are powers of 1000. qemu-img also
// reads its suffixes in lower case (64k, 30g), so b k m g t p are accepted as B K M G T P; the
// two-letter units are not (qemu-img has no "kb", and "kb" next to "KB" would read as 1000).
// The schema's $defs.size pattern is SIZE_PATTERN; a unit test keeps the two the same.
const UNITS: Record<string, number> = {
  '': 1,
  B: 1,
  b: 1,
  K: 1024,
  M: 1024 ** 2,
  G: 1024 ** 3,
  T: 1024 ** 4,
  P: 1024 ** 5,
  k: 1024,
  m: 1024 ** 2,
  g: 1024 ** 3,
  t: 1024 ** 4,
  p: 1024 ** 5,
  KiB: 1024,
  MiB: 1024 ** 2,
  GiB: 1024 ** 3,
  TiB: 1024 ** 4,
  PiB: 1024 ** 5,
  KB: 1000,
  MB: 1000 ** 2,
  GB: 1000 ** 3,
  TB: 1000 ** 4,
  PB: 1000 ** 5,
};

export const SIZE_PATTERN = '^[0-9]+(\\.[0-9]+)?\\s*(B|K|M|G|T|P|b|k|m|g|t|p|KiB|MiB|GiB|TiB|PiB|KB|MB|GB|TB|PB)?$';
const SIZE_RE = new RegExp(SIZE_PATTERN);
export const SIZE_HELP = 'a whole number of bytes or a number with a unit: K M G T P / KiB MiB GiB TiB PiB (powers of 1024) or KB MB GB TB PB (powers of 1000)';

/** Returns bytes, or a message saying what is allowed. */
export function parseSize(value: unknown): number | { error: string } {
  if (typeof value === 'number') {
    if (!Number.isSafeInteger(value) || value < 0) return { error: `must be ${SIZE_HELP}` };
    return value;
  }
  if (typeof value !== 'string' || !SIZE_RE.test(value.trim())) {
    return { error: `must be ${SIZE_HELP} (got ${JSON.stringify(value)})` };
  }
  const m = /^([0-9]+(?:\.[0-9]+)?)\s*([A-Za-z]*)$/.exec(value.trim())!;
  const bytes = Number(m[1]) * UNITS[m[2] ?? '']!;
  if (!Number.isSafeInteger(Math.round(bytes))) return { error: `${value} is too large` };
  if (!Number.isInteger(bytes)) return { error: `${value} is not a whole number of bytes` };
  return bytes;
}

/**
 * Human form used in plans: exact in the largest unit that divides the size ("2040 GiB",
 * "977 KiB"), unless that reads worse than an approximation ("251.97 GiB (… bytes)").
 */
export function formatSize(bytes: number): string {
  const units = ['B', 'KiB', 'MiB', 'GiB', 'TiB', 'PiB'];
  for (let i = units.length - 1; i >= 1; i--) {
    const v = bytes / 1024 ** i;
    if (v >= 1 && Number.isInteger(v) && v < 10240) return `${v} ${units[i]}`;
  }
  if (bytes < 10240) return `${bytes} B`;
  let i = 0;
  while (i < units.length - 1 && bytes >= 1024 ** (i + 1)) i++;
  return `${(bytes / 1024 ** i).toFixed(2)} ${units[i]} (${bytes} bytes)`;
}
