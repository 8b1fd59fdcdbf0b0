// load → schema → semantics: the one entry point from -f paths (or the texts a saved plan
// embeds) to a DesiredState.
import { hostname } from 'node:os';
import { visit, type Node } from 'yaml';
import { ConfigErrors, type ConfigError } from './errors.js';
import { expandPaths, parseFile, readInput } from './load.js';
import type { FileInput } from './input.js';
import type { DesiredState } from './model.js';
import { makeResolver } from './paths.js';
import { checkSchema } from './schema.js';
import { locate, type FieldPath, type SourceFile } from './source-file.js';
import { buildDesiredState, type ParsedFile } from './validate.js';
import { appliesTo, hostTarget, type HostSelector, type HostTarget } from './hosts.js';

/** This machine by its name, without labels: the target when none is given. */
function thisHost(): HostTarget {
  const t = hostTarget(undefined);
  // A machine name that is not a host name (rare): compared as it is.
  return 'error' in t ? { host: hostname(), labels: {} } : t;
}

export interface InputFile {
  path: string;
  text: string;
}

/**
 * Reads and checks every file that applies to the target (default: this machine, no labels);
 * throws ConfigErrors listing all problems at once.
 */
export async function loadDesiredState(inputs: string[], target?: HostTarget): Promise<DesiredState> {
  const { texts, errors } = await readTexts(inputs);
  return desiredStateFrom(texts, errors, target);
}

/** The texts of the -f paths (directories expanded), and why any could not be read. */
export async function readTexts(inputs: string[]): Promise<{ texts: InputFile[]; errors: ConfigError[] }> {
  const { files, errors } = await expandPaths(inputs);
  const texts: InputFile[] = [];
  for (const r of await Promise.all(files.map(async (f) => ({ f, ...(await readInput(f)) })))) {
    if (r.error) errors.push(r.error);
    else texts.push({ path: r.f, text: r.text! });
  }
  return { texts, errors };
}

const KINDS = ['pools', 'images', 'vms', 'backups', 'secrets'];

/**
 * Checks the given texts (already read) that apply to the target; throws ConfigErrors listing
 * all problems at once. A file whose `hosts:` selects another host is left out, its errors with
 * it (they are that host's to report); one whose `hosts:` cannot be read is everyone's.
 */
export function desiredStateFrom(texts: InputFile[], errors: ConfigError[] = [], target: HostTarget = thisHost()): DesiredState {
  const parsed: ParsedFile[] = [];
  const otherHostsFiles: string[] = [];
  let targeted = false;
  // Objects with schema errors are left out of the semantic checks (their data cannot be
  // trusted), but their names still count as declared: no reference to them is reported
  // missing merely because they are malformed. Everything else is checked in the same run.
  const invalid = new Set<string>();
  for (const { path, text } of texts) {
    const r = parseFile(path, text);
    errors.push(...r.errors);
    if (!r.source || r.errors.length) continue;
    const { data, bad } = toData(r.source, errors);
    if (data === undefined) continue;
    // Non-finite numbers count as schema errors of their objects (reported once, by toData).
    const badFields = new Set(bad.map((e) => e.field));
    const schemaErrors = [...bad, ...checkSchema(r.source, data).filter((e) => !badFields.has(e.field))];
    const hosts = isObject(data) && Array.isArray(data.hosts) ? (data.hosts as HostSelector[]) : undefined;
    if (hosts) targeted = true;
    if (hosts && !schemaErrors.some((e) => e.field === 'hosts' || e.field.startsWith('hosts[')) && !appliesTo(hosts, target)) {
      otherHostsFiles.push(path);
      continue;
    }
    errors.push(...schemaErrors);
    if (!schemaErrors.length) {
      parsed.push({ source: r.source, data: (data ?? undefined) as FileInput | undefined });
      continue;
    }
    const d = data as Record<string, Record<string, unknown> | undefined>;
    const whole = schemaErrors.some((e) => !KINDS.some((k) => e.field.startsWith(`${k}.`)));
    for (const k of KINDS)
      for (const name of Object.keys(isObject(d[k]) ? d[k]! : {})) {
        const id = `${k}.${name}`;
        if (whole || schemaErrors.some((e) => e.field === id || e.field.startsWith(`${id}.`) || e.field.startsWith(`${id}[`))) {
          invalid.add(id);
          delete d[k]![name];
        }
      }
    if (!whole) parsed.push({ source: r.source, data: (data ?? undefined) as FileInput | undefined });
  }
  const built = buildDesiredState(parsed, makeResolver());
  const semantic = built.errors.filter((e) => {
    const ref = /^refers to (pool|image|vm) "([^"]*)", which is not declared/.exec(e.message);
    return !ref || !invalid.has(`${ref[1]}s.${ref[2]}`);
  });
  errors.push(...semantic);
  if (errors.length || !built.state) throw new ConfigErrors(sortErrors(errors));
  return { ...built.state, inputs: texts, target, otherHostsFiles, targeted };
}

const isObject = (v: unknown): v is Record<string, unknown> => typeof v === 'object' && v !== null && !Array.isArray(v);

/**
 * The document as plain data, or undefined with a positioned error: an alias bomb (too
 * many aliases to expand) and numbers that are not finite (.nan, .inf) stop here.
 */
function toData(source: SourceFile, errors: ConfigError[]): { data?: unknown; bad: ConfigError[] } {
  const at = (node: Node | undefined, message: string, field = '') => {
    const pos = source.lines.linePos(node?.range?.[0] ?? 0);
    errors.push({ file: source.path, line: pos.line, col: pos.col, field, message });
  };
  let data: unknown;
  try {
    data = source.doc.toJS({ maxAliasCount: 100 });
  } catch (e) {
    let first: Node | undefined;
    visit(source.doc, {
      Alias: (_k, n) => {
        first ??= n as unknown as Node;
      },
    });
    at(first, `YAML aliases expand to too much data (${(e as Error).message.replace(/\.$/, '')}); write the values out`);
    return { bad: [] };
  }
  const bad: FieldPath[] = [];
  const walk = (v: unknown, p: FieldPath) => {
    if (typeof v === 'number' && !Number.isFinite(v)) bad.push(p);
    else if (Array.isArray(v)) {
      for (const [i, x] of v.entries()) walk(x, [...p, i]);
    } else if (isObject(v)) for (const [k, x] of Object.entries(v)) walk(x, [...p, k]);
  };
  walk(data, []);
  return {
    data,
    bad: bad.map((p) => {
      const pos = locate(source, p, {});
      return {
        file: source.path,
        line: pos.line,
        col: pos.col,
        field: p.map((s, i) => (typeof s === 'number' ? `[${s}]` : i ? `.${s}` : s)).join(''),
        message: 'must be a finite number (.nan and .inf are not sizes, ids or counts)',
      };
    }),
  };
}

function sortErrors(errors: ConfigError[]): ConfigError[] {
  return [...errors].sort((a, b) => a.file.localeCompare(b.file) || a.line - b.line || a.col - b.col);
}
