// Text output is read by people and by CI reviews: a path or name holding a newline or a
// terminal escape must not be able to fake a plan line or recolour a terminal. Every field
// that came from input is printed through printable().
const NAMED: Record<string, string> = { '\n': '\\n', '\r': '\\r', '\t': '\\t' };

export function printable(s: string): string {
  // C0 and C1 controls, DEL, the Unicode line and paragraph separators, and the bidi
  // controls that can visually reorder a line (U+200E/F, U+202A-E, U+2066-9).
  // biome-ignore lint/suspicious/noControlCharactersInRegex: finding control characters is this function's job
  return s.replace(/[\u0000-\u001f\u007f-\u009f\u2028\u2029\u200e\u200f\u202a-\u202e\u2066-\u2069]/g, (c) => NAMED[c] ?? `\\u${c.charCodeAt(0).toString(16).padStart(4, '0')}`);
}
