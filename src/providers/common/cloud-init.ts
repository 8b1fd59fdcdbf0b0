// cloud-init NoCloud seeds, for image files and pool volumes alike: which files a seed holds,
// the digest the inventory records to tell when their content changed (never the content:
// user-data often holds passwords), and the ISO built from exactly the content the plan saw.
import { createHash } from 'node:crypto';
import { readFile, writeFile } from 'node:fs/promises';
import path from 'node:path';
import type { CloudInitFiles, ImageSpec } from '../../reconcile/model.js';
import { makeIso } from '../../tools/iso.js';
import { withTempDir } from '../../tools/scratch.js';

/** What cloud-init's NoCloud datasource reads, by the YAML's name for each file. */
const NAMES: [keyof CloudInitFiles, string][] = [
  ['userData', 'user-data'],
  ['metaData', 'meta-data'],
  ['networkConfig', 'network-config'],
  ['vendorData', 'vendor-data'],
];

/** The label NoCloud looks for. */
export const SEED_LABEL = 'cidata';

/** Larger files are not read into a plan: seeds and secrets hold configuration, not payloads. */
export const MAX_SMALL_FILE_BYTES = 16 * 1024 * 1024;

/** One file of a seed: read from `path`, or (meta-data not declared) generated `text`. */
export interface SeedEntry {
  name: string;
  path?: string;
  text?: string;
  /** sha256 of the content the plan saw: the build uses that content or nothing */
  sha256: string;
}

export type SeedPlan = { ok: true; entries: SeedEntry[]; digest: string } | { ok: false; path: string };

const sha256 = (b: Buffer | string) => createHash('sha256').update(b).digest('hex');

/** The files a seed reads, to be observed by the plan. */
export function seedFiles(spec: ImageSpec): string[] {
  return spec.source.kind === 'cloudInit' ? NAMES.flatMap(([k]) => (spec.source.kind === 'cloudInit' && spec.source.files[k] ? [spec.source.files[k]!] : [])) : [];
}

/**
 * The seed as this plan will build it, from the digests observation read; `ok: false` names a
 * file that could not be read. Without metaData, meta-data is generated with the image's name as
 * instance-id (NoCloud needs one; a constant one keeps cloud-init from running again as on a new
 * instance when the seed is rebuilt).
 */
export function planSeed(spec: ImageSpec, digests: Map<string, string>): SeedPlan | undefined {
  if (spec.source.kind !== 'cloudInit') return undefined;
  const files = spec.source.files;
  const entries: SeedEntry[] = [];
  for (const [k, name] of NAMES) {
    const p = files[k];
    if (p === undefined) {
      if (k === 'metaData') {
        const text = `instance-id: ${spec.name}\n`;
        entries.push({ name, text, sha256: sha256(text) });
      }
      continue;
    }
    const d = digests.get(p);
    if (d === undefined) return { ok: false, path: p };
    entries.push({ name, path: p, sha256: d });
  }
  return { ok: true, entries, digest: sha256(entries.map((e) => `${e.name}\0${e.sha256}\n`).join('')) };
}

/** The source identity the inventory records for a seed (a change of it is a rebuild). */
export function seedIdentity(digest: string): string {
  return `cloudInit:${digest.slice(0, 16)}`;
}

/** The sha256 of a seed or secret value file, as observation reads it (refusing what is too large to be one). */
export async function digestSmallFile(p: string): Promise<string> {
  const buf = await readSmallFile(p);
  return sha256(buf);
}

async function readSmallFile(p: string): Promise<Buffer> {
  const buf = await readFile(p);
  if (buf.length > MAX_SMALL_FILE_BYTES) throw new Error(`${p} is over ${MAX_SMALL_FILE_BYTES / 1024 / 1024} MiB, too large for a seed or secret file`);
  return buf;
}

/**
 * Builds the seed ISO at `output` from the content the plan saw: each file is read once,
 * checked against its planned digest and copied into private scratch (0600) that the ISO is
 * made from, so a file edited after the plan fails the build instead of slipping in unseen.
 */
export async function buildSeed(output: string, entries: SeedEntry[], signal?: AbortSignal): Promise<void> {
  await withTempDir(async (dir) => {
    const staged = [];
    for (const e of entries) {
      const content = e.text !== undefined ? Buffer.from(e.text) : await readSmallFile(e.path!);
      if (sha256(content) !== e.sha256) throw new Error(`${e.path} changed since the plan; run plan again`);
      const file = path.join(dir, e.name);
      await writeFile(file, content, { mode: 0o600 });
      staged.push({ name: e.name, path: file });
    }
    await makeIso(output, SEED_LABEL, staged, { signal });
  });
}

/**
 * Whether a rebuild is only a seed's content changing: the seed holds nothing but what its
 * declared files make, so building it again loses nothing and needs no --allow-replace.
 */
export function seedContentOnly(rebuild: { field: string; from: string; to: string }[]): boolean {
  return rebuild.length > 0 && rebuild.every((c) => c.field === 'source' && c.from.startsWith('cloudInit:') && c.to.startsWith('cloudInit:'));
}
