// Checksum lists as distributions publish them (SHA256SUMS, CHECKSUM): the GNU form
// ("HEX  name", "HEX *name") and the BSD form ("SHA256 (name) = HEX"), possibly wrapped in a
// PGP clear signature. Pure: tested on its own.

const GNU = /^([0-9a-fA-F]{64}) [ *](.+)$/;
const BSD = /^SHA256 \((.+)\) ?= ?([0-9a-fA-F]{64})$/;

/** Every (name, sha256) of a list, names as written (a leading "./" or "*" removed). */
export function parseChecksumList(text: string): { name: string; sha256: string }[] {
  const out: { name: string; sha256: string }[] = [];
  for (const raw of text.split(/\r?\n/)) {
    const line = raw.trim();
    const g = GNU.exec(line);
    const b = g ? undefined : BSD.exec(line);
    const name = g?.[2] ?? b?.[1];
    const hex = g?.[1] ?? b?.[2];
    if (name && hex) out.push({ name: name.replace(/^\.\//, ''), sha256: hex.toLowerCase() });
  }
  return out;
}

/**
 * The sha256 a list gives for the file a URL names (its last path segment, decoded); a name
 * listed with a directory matches by its last segment too. Two different digests for it is
 * an error: which one is meant cannot be told.
 */
export function checksumFor(text: string, url: string): { sha256: string } | { error: string } {
  const file = fileNameOf(url);
  const hits = parseChecksumList(text).filter((e) => e.name === file || e.name.split('/').pop() === file);
  const digests = [...new Set(hits.map((h) => h.sha256))];
  if (digests.length === 1) return { sha256: digests[0]! };
  if (!digests.length) return { error: `lists no SHA-256 for ${file}` };
  return { error: `lists ${digests.length} different SHA-256 digests for ${file}` };
}

/** The file a URL names: its last path segment, percent-decoded. */
export function fileNameOf(url: string): string {
  const last = new URL(url).pathname.split('/').filter(Boolean).pop() ?? '';
  try {
    return decodeURIComponent(last);
  } catch {
    return last;
  }
}
