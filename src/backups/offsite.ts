// Off-site copies (`copyTo:`): every backup is sent to each place once it is made and
// verified — its copies, its domain definition and its record (ID.json, so the place holds
// what is needed to restore without this host's state) — oldest first, so an incremental
// backup's base is there before it. What failed is tried again at the next run; retention
// removes a backup there too; restore fetches what is missing here from a place that has it,
// checked against the SHA-256 recorded when it was sent.
import { sha256File } from '../file-sha256.js';
import { chmod, mkdir, rm, stat, writeFile } from 'node:fs/promises';
import path from 'node:path';
import type { BackupSpec, OffsiteTarget } from '../reconcile/model.js';
import { openStore, type OffsiteStore } from '../offsite/store.js';
import { readBackupRecords, writeBackupRecords, type BackupRecords, type BackupRun } from './records.js';

interface Ctx {
  stateDir: string;
  log: (line: string) => void;
}

/** The names a backup has at a place: its copies, its definition, its record. */
export const offsiteNames = (r: BackupRun) => [...r.files.map((f) => path.basename(f.file)), ...(r.domainXml ? [path.basename(r.domainXml)] : []), `${r.id}.json`];

/** The local files of a backup that are sent (its record, ID.json, is written beside them when sent). */
const localFiles = (r: BackupRun) => [...r.files.map((x) => x.file), ...(r.domainXml ? [r.domainXml] : [])];

const exists = async (f: string) => !!(await stat(f).catch(() => undefined));

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
 * Sends every backup of the schedule that a place does not have yet (and removes there what
 * retention removed here); returns the failures, each recorded on its backup.
 */
export async function sendOffsite(spec: BackupSpec, ctx: Ctx): Promise<string[]> {
  const records = await readBackupRecords(ctx.stateDir);
  const store = stores(spec.copyTo);
  const failures: string[] = [];
  // Removals first: retention's choice is made. Only this schedule's, at places it still names
  // (another schedule's are its own; a place left out of copyTo is the user's now).
  const mine = (records.offsiteDeletes ?? []).filter((d) => d.schedule === spec.name && store(d.url));
  const others = (records.offsiteDeletes ?? []).filter((d) => !mine.includes(d));
  const left: typeof mine = [];
  for (const d of mine) {
    try {
      for (const n of d.names) await (await store(d.url)!).remove(n);
    } catch (e) {
      left.push(d);
      failures.push(`removing ${d.names[0]}… from ${d.url}: ${(e as Error).message}`);
    }
  }
  records.offsiteDeletes = [...others, ...left];
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
      // A copy gone from here is fetched from a place that has it (checked), else this backup
      // cannot be sent: the next ones still are (those based on it wait for it).
      try {
        await fetchMissing(spec, [r], ctx);
      } catch (e) {
        const error = `it is missing here: ${(e as Error).message}`;
        r.copies = { ...r.copies, [t.url]: { error } };
        failures.push(`copying ${r.id} to ${t.url}: ${error}`);
        continue;
      }
      try {
        const s = await store(t.url)!;
        const manifest = path.join(path.dirname(r.files[0]!.file), `${r.id}.json`);
        // What each file holds, recorded before it leaves: a fetch is checked against it.
        for (const f of localFiles(r)) r.sums = { ...r.sums, [path.basename(f)]: r.sums?.[path.basename(f)] ?? (await sha256File(f)) };
        await writeFile(manifest, `${JSON.stringify({ ...r, copies: undefined }, null, 2)}\n`, { mode: 0o600 });
        for (const f of [...localFiles(r), manifest]) await s.put(f, path.basename(f));
        r.copies = { ...r.copies, [t.url]: { at: new Date().toISOString() } };
        ctx.log(`backups.${spec.name}: ${r.id} copied to ${t.url}`);
      } catch (e) {
        const error = (e as Error).message;
        r.copies = { ...r.copies, [t.url]: { error } };
        failures.push(`copying ${r.id} to ${t.url}: ${error}`);
        ctx.log(`backups.${spec.name}: copying ${r.id} to ${t.url} failed: ${error}`);
        break; // the place is unwell: the next run tries again, in order
      }
    }
  }
  await writeBackupRecords(ctx.stateDir, records);
  return failures;
}

/**
 * Retention removed these backups here: remove them at each place that has them, or remember
 * to (in the records the caller writes next: pass them in).
 */
export async function removeOffsite(spec: BackupSpec, doomed: BackupRun[], ctx: Ctx, records: BackupRecords): Promise<void> {
  const store = stores(spec.copyTo);
  for (const r of doomed) {
    for (const [url, c] of Object.entries(r.copies ?? {})) {
      if (!c.at || !store(url)) continue;
      try {
        for (const n of offsiteNames(r)) await (await store(url)!).remove(n);
        ctx.log(`backups.${spec.name}: retention removed ${r.id} from ${url}`);
      } catch (e) {
        records.offsiteDeletes = [...(records.offsiteDeletes ?? []), { schedule: spec.name, url, names: offsiteNames(r) }];
        ctx.log(`backups.${spec.name}: could not remove ${r.id} from ${url} (tried again at the next run): ${(e as Error).message}`);
      }
    }
    if (r.files[0]) await rm(path.join(path.dirname(r.files[0].file), `${r.id}.json`), { force: true });
  }
}

/**
 * Each file of these backups that is missing here is fetched from a place that has the backup;
 * one whose SHA-256 is not the one recorded when it was sent is discarded, and the next place
 * is tried.
 */
export async function fetchMissing(spec: BackupSpec, chain: BackupRun[], ctx: Ctx): Promise<void> {
  const store = stores(spec.copyTo);
  for (const r of chain)
    for (const f of localFiles(r)) {
      if (await exists(f)) continue;
      const from = Object.entries(r.copies ?? {}).filter(([url, c]) => c.at && store(url));
      if (!from.length) throw new Error(`${f} is missing here, and no place in copyTo has ${r.id}`);
      // The destination as a run makes it: QEMU may pass through, not list.
      await mkdir(path.dirname(f), { recursive: true, mode: 0o711 });
      const want = r.sums?.[path.basename(f)];
      const why: string[] = [];
      for (const [url] of from) {
        try {
          await (await store(url)!).get(path.basename(f), f);
          await chmod(f, 0o600);
          const got = want ? await sha256File(f) : undefined;
          if (got !== want) {
            await rm(f, { force: true });
            throw new Error(`what was fetched is not what was sent (SHA-256 ${got?.slice(0, 12)}…, sent ${want?.slice(0, 12)}…)`);
          }
          ctx.log(`restore: ${path.basename(f)} is not here: fetched from ${url}${want ? ' (SHA-256 checked)' : ''}`);
          break;
        } catch (e) {
          why.push(`${url}: ${(e as Error).message}`);
          ctx.log(`restore: fetching ${path.basename(f)} from ${url} failed: ${(e as Error).message}`);
        }
      }
      if (!(await exists(f))) throw new Error(`${f} is missing here and could not be fetched (${why.join('; ')})`);
    }
}
