// `validate --all-hosts HOSTS_FILE`: every host's desired state checked in one run, as CI
// checks a fleet repository before any agent pulls it. Each host is checked as its own agent
// would be (only the files its selectors take); an error shared by several hosts is reported
// once, naming them. A file that selects none of the listed hosts is a warning.
import { realpath } from 'node:fs/promises';
import { isMap, isScalar, isSeq, type Node } from 'yaml';
import { desiredStateFrom, readTexts, type InputFile } from './config.js';
import { ConfigErrors, type ConfigError } from './errors.js';
import { appliesTo, isHostName, parseLabel, type HostSelector, type HostTarget } from './hosts.js';
import { parseFile, readInput } from './load.js';
import type { DesiredState } from './model.js';

export interface FleetReport {
  hosts: { target: HostTarget; state: DesiredState }[];
  /** positioned, as errors are */
  warnings: ConfigError[];
  /** each naming the hosts it is an error for */
  errors: ConfigError[];
}

/**
 * The hosts file: a list of hosts, each a name or `{ name, labels: { KEY: VALUE } }`.
 * Its own errors are positioned like the YAML's.
 */
export async function readHostsFile(file: string): Promise<HostTarget[]> {
  const r = await readInput(file);
  if (r.error) throw new ConfigErrors([r.error]);
  const { source, errors } = parseFile(file, r.text!);
  if (errors.length || !source) throw new ConfigErrors(errors);
  const at = (n: Node | null | undefined, field: string, message: string): ConfigError => {
    const pos = source.lines.linePos(n?.range?.[0] ?? 0);
    return { file, line: pos.line, col: pos.col, field, message };
  };
  const bad: ConfigError[] = [];
  const out: HostTarget[] = [];
  const root = source.doc.contents;
  const list = isMap(root) ? root.get('hosts', true) : root;
  if (!isSeq(list))
    throw new ConfigErrors([at(root as Node, 'hosts', 'a hosts file is a list of hosts (each a name, or { name: NAME, labels: { KEY: VALUE } }), under hosts: or alone')]);
  const seen = new Set<string>();
  list.items.forEach((item, i) => {
    const field = `hosts[${i}]`;
    let name: unknown;
    const labels: Record<string, string> = {};
    if (isScalar(item)) name = item.value;
    else if (isMap(item)) {
      name = item.get('name');
      for (const p of item.items) {
        const k = isScalar(p.key) ? String(p.key.value) : '';
        if (k !== 'name' && k !== 'labels') bad.push(at(p.key as Node, `${field}.${k}`, 'unknown field (allowed: name, labels)'));
      }
      const l = item.get('labels', true);
      if (l !== undefined && !isMap(l)) bad.push(at(l as Node, `${field}.labels`, 'must be a map of KEY: VALUE'));
      if (isMap(l))
        for (const p of l.items) {
          const kv = `${isScalar(p.key) ? String(p.key.value) : ''}=${isScalar(p.value) ? String(p.value.value) : ''}`;
          const parsed = parseLabel(kv);
          if (!parsed) bad.push(at(p.key as Node, `${field}.labels`, `${JSON.stringify(kv)} is not a label (KEY: VALUE, no white space or = in the value)`));
          else labels[parsed[0]] = parsed[1];
        }
    }
    if (typeof name !== 'string' || !isHostName(name)) {
      bad.push(at(item as Node, field, `a host is a host name (letters, digits, . _ -) or { name: NAME, labels: {...} } (got ${JSON.stringify(name ?? null)})`));
      return;
    }
    if (seen.has(name.toLowerCase())) bad.push(at(item as Node, field, `host ${name} is listed twice`));
    seen.add(name.toLowerCase());
    out.push({ host: name, labels });
  });
  if (!out.length && !bad.length) bad.push(at(list, 'hosts', 'lists no host'));
  if (bad.length) throw new ConfigErrors(bad);
  return out;
}

/** Checks every host's desired state: the hosts found valid, the errors (each naming its hosts), the warnings. */
export async function validateAllHosts(inputs: string[], hostsFile: string): Promise<FleetReport> {
  const hosts = await readHostsFile(hostsFile);
  const read = await readTexts(inputs);
  // The hosts file may sit among the YAML files (-f .): it is not one of them.
  const self = await realpath(hostsFile);
  const texts: InputFile[] = [];
  for (const t of read.texts) if ((await realpath(t.path).catch(() => t.path)) !== self) texts.push(t);
  const readErrors = read.errors;
  const byMessage = new Map<string, { e: ConfigError; hosts: string[] }>();
  const states: FleetReport['hosts'] = [];
  for (const target of hosts) {
    try {
      states.push({ target, state: desiredStateFrom(texts, [...readErrors], target) });
    } catch (e) {
      if (!(e instanceof ConfigErrors)) throw e;
      for (const err of e.errors) {
        const key = JSON.stringify(err);
        const seen = byMessage.get(key);
        if (seen) seen.hosts.push(target.host);
        else byMessage.set(key, { e: err, hosts: [target.host] });
      }
    }
  }
  const errors = [...byMessage.values()].map(({ e, hosts: hs }) => ({
    ...e,
    message: `${e.message} (${hs.length === hosts.length && hosts.length > 1 ? 'every host' : `host${hs.length > 1 ? 's' : ''} ${hs.join(', ')}`})`,
  }));
  return { hosts: states, warnings: unselected(texts, hosts, hostsFile), errors };
}

/** Files whose hosts: selects none of the listed hosts: valid, but applied nowhere. */
function unselected(texts: InputFile[], hosts: HostTarget[], hostsFile: string): ConfigError[] {
  const out: ConfigError[] = [];
  for (const t of texts) {
    const { source } = parseFile(t.path, t.text);
    const root = source?.doc.contents;
    const node = isMap(root) ? root.get('hosts', true) : undefined;
    if (!isSeq(node)) continue;
    const selectors = (node.toJSON() as HostSelector[]) ?? [];
    if (hosts.some((h) => appliesTo(selectors, h))) continue;
    const pos = source!.lines.linePos(node.range?.[0] ?? 0);
    out.push({ file: t.path, line: pos.line, col: pos.col, field: 'hosts', message: `selects none of the ${hosts.length} host(s) in ${hostsFile}: the file is applied nowhere` });
  }
  return out;
}
