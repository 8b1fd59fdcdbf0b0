// cloud-init NoCloud seeds, for image files and pool volumes alike: which files a seed holds,
// the salted digest the inventory records to tell when their content changed (never the
// content, nor a plain hash of it: user-data often holds passwords), and the ISO built from
// the files as the plan saw them.
import { randomBytes } from 'node:crypto';
import { writeFile } from 'node:fs/promises';
import path from 'node:path';
import type { CloudInitFiles, ImageSpec } from '../../reconcile/model.js';
import { makeIso } from '../../tools/iso.js';
import { withTempDir } from '../../tools/scratch.js';
import { readUnchanged, sha256Hex, type SmallFileDigest } from './small-files.js';

/** What cloud-init's NoCloud datasource reads, by the YAML's name for each file. */
const NAMES: [keyof CloudInitFiles, string][] = [
  ['userData', 'user-data'],
  ['metaData', 'meta-data'],
  ['networkConfig', 'network-config'],
  ['vendorData', 'vendor-data'],
];

/** The label NoCloud looks for. */
export const SEED_LABEL = 'cidata';

/** One file of a seed: read from `path` (as the plan saw it: `signature`), or (meta-data not declared) generated `text`. */
export interface SeedEntry {
  name: string;
  path?: string;
  text?: string;
  signature?: string;
}

export type SeedPlan = { ok: true; entries: SeedEntry[]; digest: string } | { ok: false; path: string };

/** The files a seed reads, to be observed by the plan. */
export function seedFiles(spec: ImageSpec): string[] {
  const s = spec.source;
  return s.kind === 'cloudInit' ? NAMES.flatMap(([k]) => (s.files[k] ? [s.files[k]!] : [])) : [];
}

const line = (name: string, sha: string) => `${name}\0${sha}\n`;

/**
 * The seed as this plan will build it, from what observation read of its files; `ok: false`
 * names a file that could not be read. Without metaData, meta-data is generated with the
 * image's name as instance-id (NoCloud needs one; a constant one keeps cloud-init from running
 * again as on a new instance when the seed is rebuilt).
 */
export function planSeed(spec: ImageSpec, digests: Map<string, SmallFileDigest>): SeedPlan | undefined {
  if (spec.source.kind !== 'cloudInit') return undefined;
  const files = spec.source.files;
  const entries: SeedEntry[] = [];
  const lines: string[] = [];
  for (const [k, name] of NAMES) {
    const p = files[k];
    if (p === undefined) {
      if (k === 'metaData') {
        const text = `instance-id: ${spec.name}\n`;
        entries.push({ name, text });
        lines.push(line(name, sha256Hex(text)));
      }
      continue;
    }
    const d = digests.get(p);
    if (d === undefined) return { ok: false, path: p };
    entries.push({ name, path: p, signature: d.signature });
    lines.push(line(name, d.sha256));
  }
  return { ok: true, entries, digest: sha256Hex(lines.join('')) };
}

/** The seed's digest from its files as they are now, each checked to be as the plan saw it. */
export async function currentSeedDigest(entries: SeedEntry[]): Promise<string> {
  const lines: string[] = [];
  for (const e of entries) lines.push(line(e.name, e.text !== undefined ? sha256Hex(e.text) : (await readUnchanged(e.path!, e.signature!)).sha256));
  return sha256Hex(lines.join(''));
}

/**
 * The source identity the inventory records for a seed: salted, so the record gives nothing to
 * check a guess of the files' content against; a change of it is a rebuild. Chosen by the apply.
 */
export function seedIdentity(digest: string, salt = randomBytes(8).toString('hex')): string {
  return `cloudInit:${salt}:${sha256Hex(`${salt}:${digest}`)}`;
}

/** Whether a recorded identity is the seed with this digest (by the record's own salt). */
export function sameSeed(recorded: string | undefined, digest: string): boolean {
  const m = /^cloudInit:([0-9a-f]+):[0-9a-f]{64}$/.exec(recorded ?? '');
  return !!m && seedIdentity(digest, m[1]) === recorded;
}

/** How a seed's source change reads in a plan (no digest in it). */
export const SEED_AS_BUILT = 'cloud-init seed as built';
export const SEED_CHANGED = 'cloud-init seed from its changed files';

/**
 * Builds the seed ISO at `output` from the files as the plan saw them: xorriso reads them in
 * place (no copy of a user-data that may hold passwords is ever written), each checked before
 * and after to be unchanged, so an edit after the plan fails the build instead of slipping in
 * unseen. Only generated meta-data is written, to private scratch.
 */
export async function buildSeed(output: string, entries: SeedEntry[], signal?: AbortSignal): Promise<void> {
  await withTempDir(async (dir) => {
    const graft = [];
    for (const e of entries) {
      if (e.text !== undefined) {
        const file = path.join(dir, e.name);
        await writeFile(file, e.text, { mode: 0o600 });
        graft.push({ name: e.name, path: file });
      } else {
        await readUnchanged(e.path!, e.signature!);
        graft.push({ name: e.name, path: e.path! });
      }
    }
    await makeIso(output, SEED_LABEL, graft, { signal });
    for (const e of entries) if (e.path) await readUnchanged(e.path, e.signature!);
  });
}

/**
 * Whether a rebuild is only a seed's content changing: the seed holds nothing but what its
 * declared files make, so building it again loses nothing and needs no --allow-replace.
 */
export function seedContentOnly(rebuild: { field: string; from: string; to: string }[]): boolean {
  return rebuild.length > 0 && rebuild.every((c) => c.field === 'source' && c.from === SEED_AS_BUILT && c.to === SEED_CHANGED);
}
