// Off-site copies (`copyTo:`): every backup is sent to each target once it is made and
// verified — its copies, its domain definition and its record (ID.json, so the place holds
// what is needed to restore without this host's state) — oldest first, so an incremental
// backup's base is there before it. What failed is tried again at the next run; retention
// removes a backup there too; restore fetches what is missing here from a target that has it.
import { mkdir, rm, stat, writeFile } from 'node:fs/promises';
import path from 'node:path';
import type { BackupSpec, OffsiteTarget } from '../reconcile/model.js';
import { openStore, type OffsiteStore } from '../offsite/store.js';
import { readBackupRecords, writeBackupRecords, type BackupRun } from './records.js';

interface Ctx {
  stateDir: string;
  log: (line: string) => void;
}

/** The names a backup has at a target: its copies, its definition, its record. */
export const offsiteNames = (r: BackupRun) => [...r.files.map((f) => path.basename(f.file)), ...(r.domainXml ? [path.basename(r.domainXml)] : []), `${r.id}.json`];

/** Stores opened once per call, each only when needed (an SDK is loaded for the first of its kind). */
function stores(targets: OffsiteTarget[]) {
  const open = new Map<string, Promise<OffsiteStore>>();
  return (url: string) => {
    const t = targets.find((x) => x.url === url);
    if (!t) return undefined;
    if (!open.has(url)) open.set(url, openStore(t));
    return open.get(url)!;
  };
}

/**
 * Sends every backup of the schedule that a target does not have yet (and removes there what
 * retention removed here); returns the failures, each recorded on its backup.
 */
export async function sendOffsite(spec: BackupSpec, ctx: Ctx): Promise<string[]> {
  if (!spec.copyTo.length) return [];
  const store = stores(spec.copyTo);
  const failures: string[] = [];
  const records = await readBackupRecords(ctx.stateDir);
  // Removals first: retention's choice is made; a place is never left holding more than it says.
  const pending = records.offsiteDeletes ?? [];
  records.offsiteDeletes = [];
  for (const d of pending) {
    const s = store(d.url);
    if (!s) continue; // no longer a target: what is there is the user's now
    try {
      for (const n of d.names) await (await s).remove(n);
    } catch (e) {
      records.offsiteDeletes.push(d);
      failures.push(`removing ${d.names[0]}… from ${d.url}: ${(e as Error).message}`);
    }
  }
  const due = records.runs.filter((r) => r.schedule === spec.name && r.status !== 'failed' && r.verified !== false && r.files.length).sort((a, b) => a.at.localeCompare(b.at));
  for (const t of spec.copyTo) {
    for (const r of due) {
      if (r.copies?.[t.url]?.at) continue;
      // An incremental backup whose base did not reach this place waits for it.
      const parent = r.parent ? records.runs.find((x) => x.id === r.parent) : undefined;
      if (parent && !parent.copies?.[t.url]?.at) {
        r.copies = { ...r.copies, [t.url]: { error: `waiting for ${parent.id}, its base, to be there` } };
        continue;
      }
      try {
        const s = await store(t.url)!;
        const manifest = path.join(path.dirname(r.files[0]!.file), `${r.id}.json`);
        await writeFile(manifest, `${JSON.stringify({ ...r, copies: undefined }, null, 2)}\n`, { mode: 0o600 });
        for (const f of [...r.files.map((x) => x.file), ...(r.domainXml ? [r.domainXml] : []), manifest]) await s.put(f, path.basename(f));
        r.copies = { ...r.copies, [t.url]: { at: new Date().toISOString() } };
        ctx.log(`backups.${spec.name}: ${r.id} copied to ${t.url}`);
      } catch (e) {
        const error = (e as Error).message;
        r.copies = { ...r.copies, [t.url]: { error } };
        failures.push(`copying ${r.id} to ${t.url}: ${error}`);
        ctx.log(`backups.${spec.name}: copying ${r.id} to ${t.url} failed: ${error}`);
        break; // later backups may be based on this one: the next run tries again in order
      }
    }
  }
  await writeBackupRecords(ctx.stateDir, records);
  return failures;
}

/** Retention removed these backups here: remove them at each target that has them (or remember to). */
export async function removeOffsite(spec: BackupSpec, doomed: BackupRun[], ctx: Ctx): Promise<void> {
  const store = stores(spec.copyTo);
  const left: { url: string; names: string[] }[] = [];
  for (const r of doomed)
    for (const [url, c] of Object.entries(r.copies ?? {})) {
      if (!c.at) continue;
      const s = store(url);
      if (!s) continue;
      try {
        for (const n of offsiteNames(r)) await (await s).remove(n);
        ctx.log(`backups.${spec.name}: retention removed ${r.id} from ${url}`);
      } catch (e) {
        left.push({ url, names: offsiteNames(r) });
        ctx.log(`backups.${spec.name}: could not remove ${r.id} from ${url} (tried again at the next run): ${(e as Error).message}`);
      }
    }
  for (const r of doomed) if (r.files[0]) await rm(path.join(path.dirname(r.files[0].file), `${r.id}.json`), { force: true });
  if (left.length) {
    const records = await readBackupRecords(ctx.stateDir);
    records.offsiteDeletes = [...(records.offsiteDeletes ?? []), ...left];
    await writeBackupRecords(ctx.stateDir, records);
  }
}

/** Each file of these backups that is missing here is fetched from a target that has the backup. */
export async function fetchMissing(spec: BackupSpec, chain: BackupRun[], ctx: Ctx): Promise<void> {
  const store = stores(spec.copyTo);
  for (const r of chain)
    for (const f of [...r.files.map((x) => x.file), ...(r.domainXml ? [r.domainXml] : [])]) {
      if (await stat(f).catch(() => undefined)) continue;
      const from = Object.entries(r.copies ?? {}).filter(([url, c]) => c.at && store(url));
      let fetched = false;
      if (from.length) await mkdir(path.dirname(f), { recursive: true });
      for (const [url] of from) {
        try {
          await (await store(url)!).get(path.basename(f), f);
          ctx.log(`restore: ${path.basename(f)} is not here: fetched from ${url}`);
          fetched = true;
          break;
        } catch (e) {
          ctx.log(`restore: fetching ${path.basename(f)} from ${url} failed: ${(e as Error).message}`);
        }
      }
      if (!fetched && from.length) throw new Error(`${f} is missing here and could not be fetched from ${from.map(([u]) => u).join(' or ')}`);
    }
}
