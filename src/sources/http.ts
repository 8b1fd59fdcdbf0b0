// HTTP(S) downloads of image sources: redirects followed by hand (credentials never follow a
// redirect to another origin), resumed with Range after an interruption (If-Range keeps a
// changed file from being stitched onto an old half), servers that ignore Range or send no
// Content-Length handled. Nothing here prints a credential or a query string.
import { createHash } from 'node:crypto';
import { createWriteStream } from 'node:fs';
import { rm, stat, writeFile, readFile, truncate } from 'node:fs/promises';
import { Transform } from 'node:stream';
import http, { type IncomingMessage } from 'node:http';
import https from 'node:https';
import { pipeline } from 'node:stream/promises';

/** An Authorization header value (Bearer …, Basic …), read from a file by the caller. */
export interface HttpAuth {
  authorization: string;
}

/** A URL as it may be shown: no user info, no query string (signed URLs carry tokens there). */
export function displayUrl(url: string): string {
  try {
    const u = new URL(url);
    return `${u.protocol}//${u.host}${u.pathname}${u.search ? '?…' : ''}`;
  } catch {
    return '(an invalid URL)';
  }
}

const MAX_REDIRECTS = 10;
// A connection that delivers nothing for this long is given up and resumed.
const IDLE_TIMEOUT_MS = 60_000;

class HttpError extends Error {
  constructor(
    message: string,
    readonly retryable: boolean,
  ) {
    super(message);
  }
}

/** A response as this file uses it: node's own (the body's bytes exactly as sent, never decoded). */
interface Res {
  status: number;
  statusText: string;
  /** where it came from (after redirects) */
  url: string;
  header(name: string): string | undefined;
  body: IncomingMessage;
}

const ok = (r: Res) => r.status >= 200 && r.status < 300;

/**
 * One GET through node's http/https: unlike fetch it never decodes a Content-Encoding, so a .gz
 * served with "Content-Encoding: gzip" (a common server setting) arrives as the file, byte for
 * byte; identity is asked for all the same.
 */
function request(url: string, headers: Record<string, string>, signal: AbortSignal): Promise<Res> {
  const u = new URL(url);
  const mod = u.protocol === 'https:' ? https : http;
  return new Promise((resolve, reject) => {
    const req = mod.get(u, { headers: { 'accept-encoding': 'identity', 'user-agent': 'virt-reconcile', ...headers }, signal }, (body) =>
      resolve({ status: body.statusCode ?? 0, statusText: body.statusMessage ?? '', url, header: (n) => [body.headers[n.toLowerCase()]].flat()[0], body }),
    );
    req.on('error', reject);
  });
}

/** GET with redirects followed by hand: the Authorization header only ever goes to the first origin. */
async function get(url: string, headers: Record<string, string>, auth: HttpAuth | undefined, signal: AbortSignal): Promise<Res> {
  const origin = new URL(url).origin;
  let at = url;
  for (let hop = 0; hop <= MAX_REDIRECTS; hop++) {
    const h = { ...headers, ...(auth && new URL(at).origin === origin ? { authorization: auth.authorization } : {}) };
    let res: Res;
    try {
      res = await request(at, h, signal);
    } catch (e) {
      if (signal.aborted && !(signal.reason instanceof IdleTimeout)) throw signal.reason ?? e;
      throw new HttpError(`GET ${displayUrl(at)}: ${causeOf(e)}`, true);
    }
    const location = res.header('location');
    if (res.status >= 300 && res.status < 400 && location) {
      res.body.destroy();
      at = new URL(location, at).toString();
      if (!/^https?:$/.test(new URL(at).protocol)) throw new HttpError(`GET ${displayUrl(url)}: redirected to a URL that is not http(s)`, false);
      continue;
    }
    return res;
  }
  throw new HttpError(`GET ${displayUrl(url)}: more than ${MAX_REDIRECTS} redirects`, false);
}

function causeOf(e: unknown): string {
  const err = e as NodeJS.ErrnoException;
  if (err.code === 'ECONNRESET' || err.code === 'ERR_STREAM_PREMATURE_CLOSE') return `the connection was closed (${err.code})`;
  return err.code ?? err.message;
}

function statusError(url: string, res: Res): HttpError {
  // Timeouts, rate limits and server errors pass; anything else (404, 403) will not.
  const retryable = res.status === 408 || res.status === 429 || res.status >= 500;
  return new HttpError(`GET ${displayUrl(url)}: HTTP ${res.status} ${res.statusText}`.trim(), retryable);
}

/** A small text resource (a checksum list): read up to `maxBytes`, and refused past that. */
export async function fetchText(url: string, auth?: HttpAuth, o: { maxBytes?: number; timeoutMs?: number } = {}): Promise<string> {
  const max = o.maxBytes ?? 4 * 1024 * 1024;
  const ctl = new AbortController();
  const timer = setTimeout(() => ctl.abort(new Error('timed out')), o.timeoutMs ?? 30_000);
  try {
    const res = await get(url, {}, auth, ctl.signal);
    if (!ok(res)) {
      res.body.destroy();
      throw statusError(res.url, res);
    }
    const chunks: Buffer[] = [];
    let size = 0;
    for await (const chunk of res.body) {
      size += (chunk as Buffer).length;
      if (size > max) {
        res.body.destroy();
        throw new Error(`GET ${displayUrl(url)}: larger than ${max / 1024 / 1024} MiB, more than a checksum list can be`);
      }
      chunks.push(chunk as Buffer);
    }
    return Buffer.concat(chunks).toString('utf8');
  } catch (e) {
    if (ctl.signal.aborted) throw new Error(`GET ${displayUrl(url)}: not read within ${(o.timeoutMs ?? 30_000) / 1000} s`);
    throw e;
  } finally {
    clearTimeout(timer);
  }
}

class IdleTimeout extends Error {}

export type DownloadProgress = (done: number, total: number | undefined) => void;

/** What a partial download was fetched from: resumed only while the server says it is the same file. */
interface PartialMeta {
  /** the URL's SHA-256 (the URL itself may carry a token in its query) */
  url: string;
  validator?: string;
}

const metaOf = (partial: string) => `${partial}.json`;

/**
 * Downloads `url` into `partial`, resuming what an earlier (interrupted) call left there.
 * Retries a dropped connection a few times in place; what is fetched stays for the next
 * call if it still fails. Returns when the whole body is in the file.
 */
export async function download(
  url: string,
  partial: string,
  o: { auth?: HttpAuth; onProgress?: DownloadProgress; signal?: AbortSignal; log?: (line: string) => void; attempts?: number } = {},
): Promise<{ resumed: boolean }> {
  const attempts = o.attempts ?? 6;
  let meta = await readFile(metaOf(partial), 'utf8')
    .then((t) => JSON.parse(t) as PartialMeta)
    .catch(() => undefined);
  // Another URL's half (the same digest from a new mirror) is kept, but resumed without the old
  // server's validator: the caller's digest check decides, and fetches it whole if it fails.
  const urlKey = createHash('sha256').update(url).digest('hex');
  if (meta && meta.url !== urlKey) meta = { url: urlKey, validator: undefined };
  let useRange = true;
  let resumed = false;
  for (let attempt = 1; ; attempt++) {
    // Without a validator (no ETag or Last-Modified) a half is resumed all the same: the
    // caller's digest check catches a file that changed meanwhile, and fetches it whole.
    const have = (await stat(partial).catch(() => undefined))?.size ?? 0;
    const ctl = new AbortController();
    const onAbort = () => ctl.abort(o.signal!.reason);
    o.signal?.addEventListener('abort', onAbort, { once: true });
    let idle: NodeJS.Timeout | undefined;
    const touch = () => {
      clearTimeout(idle);
      idle = setTimeout(() => ctl.abort(new IdleTimeout('no data')), IDLE_TIMEOUT_MS);
    };
    try {
      touch();
      const ranged = useRange && have > 0;
      const headers: Record<string, string> = ranged ? { range: `bytes=${have}-`, ...(meta?.validator ? { 'if-range': meta.validator } : {}) } : {};
      if (ranged) resumed = true;
      const res = await get(url, headers, o.auth, ctl.signal);
      let from = 0;
      let total: number | undefined;
      if (res.status === 206 && ranged) {
        const m = /^bytes (\d+)-(\d+)\/(\d+|\*)$/.exec(res.header('content-range') ?? '');
        if (!m || Number(m[1]) !== have) {
          // A range other than the one asked for: trust none of it.
          res.body.destroy();
          useRange = false;
          throw new HttpError(`GET ${displayUrl(url)}: the server sent another range than asked for`, true);
        }
        from = have;
        total = m[3] === '*' ? undefined : Number(m[3]);
      } else if (res.status === 416 && ranged) {
        // Asked for bytes past the end: the half may be whole already (the caller's digest check
        // decides), else the file changed; started over without Range.
        res.body.destroy();
        const len = /\/(\d+)$/.exec(res.header('content-range') ?? '')?.[1];
        if (len !== undefined && Number(len) === have) return { resumed };
        useRange = false;
        await truncate(partial, 0);
        resumed = false;
        continue;
      } else if (ok(res)) {
        // 200: the whole file (a server without Range support, or a changed file).
        const len = res.header('content-length');
        total = len !== undefined && /^\d+$/.test(len) ? Number(len) : undefined;
        resumed = false;
        if (ranged) o.log?.(`${displayUrl(url)}: the server does not resume downloads (no Range support); fetching it whole again`);
      } else {
        res.body.destroy();
        // Named as the server that answered (after redirects).
        throw statusError(res.url, res);
      }
      const validator = res.header('etag') ?? res.header('last-modified') ?? undefined;
      // A weak ETag cannot be used with If-Range; nor can nothing.
      meta = { url: urlKey, validator: validator && !validator.startsWith('W/') ? validator : undefined };
      await writeFile(metaOf(partial), JSON.stringify(meta), { mode: 0o600 });
      let done = from;
      o.onProgress?.(done, total);
      const counter = new Transform({
        transform(chunk: Buffer, _enc, cb) {
          done += chunk.length;
          touch();
          o.onProgress?.(done, total);
          cb(null, chunk);
        },
      });
      try {
        await pipeline(res.body, counter, createWriteStream(partial, { flags: from ? 'a' : 'w', mode: 0o600 }));
      } catch (e) {
        if (o.signal?.aborted) throw e;
        throw new HttpError(`GET ${displayUrl(url)}: the connection broke after ${done} bytes (${causeOf(e)})`, true);
      }
      if (total !== undefined && done !== total) throw new HttpError(`GET ${displayUrl(url)}: the connection ended after ${done} of ${total} bytes`, true);
      return { resumed };
    } catch (e) {
      if (o.signal?.aborted) throw o.signal.reason ?? e;
      const retry = e instanceof HttpError ? e.retryable : true;
      if (!retry || attempt >= attempts) throw e;
      o.log?.(`${(e as Error).message}; resuming (attempt ${attempt + 1} of ${attempts})`);
      await new Promise((r) => setTimeout(r, Math.min(1000 * attempt, 5000)));
    } finally {
      clearTimeout(idle);
      o.signal?.removeEventListener('abort', onAbort);
    }
  }
}

/** Forgets a partial download (a digest mismatch: none of it can be trusted). */
export async function discardPartial(partial: string): Promise<void> {
  await rm(partial, { force: true });
  await rm(metaOf(partial), { force: true });
}
