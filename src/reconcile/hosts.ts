// Which host a run is for, and which files apply to it: a file's top-level `hosts:` selects
// hosts by name, by a glob of names or by a label; a file without it applies to every host.
// One repository then describes a fleet, and each host (an agent, or `plan --host` in CI)
// reads only its own files (the model: Flux's per-cluster paths, comin's per-host outputs).
import { hostname } from 'node:os';
import picomatch from 'picomatch';

/** Who we are: a host name and its labels (--host, --label KEY=VALUE). */
export interface HostTarget {
  host: string;
  labels: Record<string, string>;
}

export type HostSelector = string | { label: string };

const LABEL = /^([A-Za-z0-9._/-]+)=([^=\s]*)$/;

/** A host's name as --host and a hosts file take it: letters, digits, . _ -. */
export const isHostName = (name: string) => /^[A-Za-z0-9][A-Za-z0-9._-]{0,252}$/.test(name);

/** KEY=VALUE split, or undefined when it is not one. */
export function parseLabel(s: string): [string, string] | undefined {
  const m = LABEL.exec(s);
  return m ? [m[1]!, m[2]!] : undefined;
}

/** The target of a run: --host (default: this machine's name) and --label KEY=VALUE, checked. */
export function hostTarget(host: string | undefined, labels: string[] = []): HostTarget | { error: string } {
  const out: Record<string, string> = {};
  for (const l of labels) {
    const kv = parseLabel(l);
    if (!kv) return { error: `--label must be KEY=VALUE (letters, digits, . _ / - in the key; no white space or = in the value) (got ${JSON.stringify(l)})` };
    if (kv[0] in out && out[kv[0]] !== kv[1]) return { error: `--label ${kv[0]} is given twice with different values (${out[kv[0]]}, ${kv[1]})` };
    out[kv[0]] = kv[1];
  }
  const name = host ?? hostname();
  if (!isHostName(name)) return { error: `--host must be a host name (letters, digits, . _ -) (got ${JSON.stringify(name)})` };
  return { host: name, labels: out };
}

// Host names compare without case, as DNS names do.
const matchers = new Map<string, (s: string) => boolean>();
function globMatch(glob: string, name: string): boolean {
  let m = matchers.get(glob);
  if (!m) {
    // "[!a]" is a negated class in shell globs; picomatch reads it as the class {!, a}.
    m = picomatch(glob.replace(/\[!/g, '[^'), { nocase: true, dot: true });
    matchers.set(glob, m);
  }
  return m(name);
}

export function selects(sel: HostSelector, t: HostTarget): boolean {
  if (typeof sel === 'string') return /[*?[\]!{}]/.test(sel) ? globMatch(sel, t.host) : sel.toLowerCase() === t.host.toLowerCase();
  const kv = parseLabel(sel.label);
  return !!kv && t.labels[kv[0]] === kv[1];
}

/** Whether a file with these selectors (undefined: none given) applies to the target. */
export function appliesTo(hosts: HostSelector[] | undefined, t: HostTarget): boolean {
  return hosts === undefined || hosts.some((s) => selects(s, t));
}

export const describeTarget = (t: HostTarget) =>
  `${t.host}${
    Object.keys(t.labels).length
      ? ` (${Object.entries(t.labels)
          .map(([k, v]) => `${k}=${v}`)
          .join(', ')})`
      : ''
  }`;
