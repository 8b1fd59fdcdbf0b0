// Secret values this process has read (passphrases, secret values): blanked out of whatever a
// spawned tool says before it becomes an error message, a log line or a plan. No tool is known
// to echo one (qemu-img and virsh read them from files and FIFOs), and none may.
const known = new Set<string>();

/** Too short to tell from ordinary words: "abc" would blank every word it is part of. */
const MIN_LENGTH = 6;

export function rememberSecret(value: Uint8Array): void {
  const text = Buffer.from(value).toString('utf8');
  for (const v of [text, text.trim()]) if (v.length >= MIN_LENGTH) known.add(v);
}

export function redact(text: string): string {
  let out = text;
  for (const v of known) if (out.includes(v)) out = out.split(v).join('[secret]');
  return out;
}
