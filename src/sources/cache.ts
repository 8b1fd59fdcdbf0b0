// The download cache: <state dir>/downloads/sha256-HEX, each file exactly the bytes whose
// SHA-256 names it (as downloaded: still compressed). A second image from the same file,
// and a rebuild, download nothing. A half download sits beside it as .partial (with what it
// was fetched from) and is resumed; only a file whose digest matched is ever renamed in.
import { mkdir, readdir, rename, rm, stat } from 'node:fs/promises';
import path from 'node:path';
import type { DownloadAuth } from '../reconcile/model.js';
import type { ProgressSink } from '../progress/progress.js';
import { sha256File } from '../file-sha256.js';
import { readAuth } from './auth.js';
import { discardPartial, displayUrl, download } from './http.js';

export const downloadsDir = (stateDir: string) => path.join(stateDir, 'downloads');
export const cachedPath = (stateDir: string, sha256: string) => path.join(downloadsDir(stateDir), `sha256-${sha256}`);

export async function isCached(stateDir: string, sha256: string): Promise<boolean> {
  return stat(cachedPath(stateDir, sha256)).then(
    (s) => s.isFile(),
    () => false,
  );
}

// Two images of one apply from the same file: one download, both wait for it.
const inFlight = new Map<string, Promise<string>>();

/** Who is downloading (the object's id, for progress and log lines), and how it is stopped. */
export interface FetchContext {
  id: string;
  progress: ProgressSink;
  signal?: AbortSignal;
  log: (l: string) => void;
}

export interface Fetch {
  url: string;
  sha256: string;
  auth?: DownloadAuth;
  /** where the expected digest came from, for the mismatch message */
  checksumFrom: string;
}

/** The cached file for this digest, downloaded (or resumed) first if it is not there. */
export function ensureDownloaded(stateDir: string, f: Fetch, o: FetchContext): Promise<string> {
  const key = `${stateDir}\0${f.sha256}`;
  const running = inFlight.get(key);
  if (running) return running;
  const p = fetchIntoCache(stateDir, f, o).finally(() => inFlight.delete(key));
  inFlight.set(key, p);
  return p;
}

async function fetchIntoCache(stateDir: string, f: Fetch, o: FetchContext): Promise<string> {
  const final = cachedPath(stateDir, f.sha256);
  if (await isCached(stateDir, f.sha256)) return final;
  await mkdir(downloadsDir(stateDir), { recursive: true, mode: 0o700 });
  const partial = `${final}.partial`;
  const auth = await readAuth(f.auth);
  for (let whole = false; ; whole = true) {
    const task = o.progress.begin(o.id, 'downloading');
    let r: { resumed: boolean };
    try {
      r = await download(f.url, partial, { auth, signal: o.signal, log: (l) => o.log(`${o.id}: ${l}`), onProgress: (d, t) => task.update(d, t) });
    } finally {
      task.end();
    }
    const size = (await stat(partial)).size;
    const check = o.progress.begin(o.id, 'checking the download of');
    let got: string;
    try {
      got = await sha256File(partial, (d) => check.update(d, size));
    } finally {
      check.end();
    }
    if (got === f.sha256) {
      await rename(partial, final);
      await discardPartial(partial); // what is left of it: what it was fetched from
      return final;
    }
    await discardPartial(partial);
    // A resumed half of a file that changed meanwhile (no validator to tell): once more, whole.
    if (r.resumed && !whole) {
      o.log(`${o.id}: the resumed download of ${displayUrl(f.url)} did not match its checksum; downloading it whole`);
      continue;
    }
    throw new Error(
      `${displayUrl(f.url)}: checksum mismatch: expected sha256 ${f.sha256} (${f.checksumFrom}), downloaded ${got}; the download is discarded and nothing was created`,
    );
  }
}

// A download no image records may still be about to be used (its build failed; a killed
// apply's half): kept while it is younger than this.
const UNUSED_KEEP_MS = 24 * 3600 * 1000;

/**
 * Removes cached downloads (and halves) that no image was built from (`used`: the digests image
 * records hold) and that nothing touched for a day; returns their paths.
 */
export async function pruneCache(stateDir: string, used: Set<string>, now = Date.now()): Promise<string[]> {
  const dir = downloadsDir(stateDir);
  const names = await readdir(dir).catch(() => [] as string[]);
  const removed: string[] = [];
  for (const n of names) {
    const m = /^sha256-([0-9a-f]{64})(\.partial(\.json)?)?$/.exec(n);
    if (!m || used.has(m[1]!)) continue;
    const full = path.join(dir, n);
    const st = await stat(full).catch(() => undefined);
    if (!st?.isFile() || now - st.mtimeMs < UNUSED_KEEP_MS) continue;
    await rm(full, { force: true });
    removed.push(full);
  }
  return removed;
}
