// Webhook notifications from the watch service (`--notify URL`): one queue per receiver, sent in
// order, throttled, retried with backoff, signed with HMAC-SHA256 when a secret is given.
import { createHmac } from 'node:crypto';
import { setTimeout as sleep } from 'node:timers/promises';
import { printable } from '../text.js';
import type { Logger } from './log.js';

export type NotifyEventKind = 'revision-applied' | 'revision-rejected' | 'reconcile-failed' | 'reconcile-recovered' | 'drift-corrected' | 'backup-failed' | 'backup-suspended';

export interface NotifyEvent {
  kind: NotifyEventKind;
  host: string;
  message: string;
  revision?: string;
  /** what it is about: a backup's name, an object's id */
  subject?: string;
  /** ISO time; the time notify() was called when absent */
  at?: string;
  details?: Record<string, unknown>;
}

export interface NotifyTarget {
  url: string;
  format: 'json' | 'slack';
  /** this receiver's own secret, over the notifier's */
  secret?: string;
}

export interface NotifierOptions {
  targets: NotifyTarget[];
  /** the HMAC key (read from --notify-secret-file by the caller) */
  secret?: string;
  logger: Pick<Logger, 'info' | 'warn' | 'error'>;
  /** the same (kind, subject, revision) at most once per window and receiver; default 300 */
  throttleSeconds?: number;
  /** tries after the first; default 5 */
  retries?: number;
  /** first backoff, doubled each retry; default 1000 */
  backoffMs?: number;
  /** longest backoff and longest Retry-After honoured; default 60000 */
  maxBackoffMs?: number;
  fetchTimeoutMs?: number;
  /** events waiting per receiver; the oldest goes when full; default 1000 */
  queueLimit?: number;
  /** how long stop() waits for queues to drain; default 5000 */
  stopTimeoutMs?: number;
  now?: () => number;
}

export interface Notifier {
  /** queues the event for every receiver; never throws, never waits */
  notify(e: NotifyEvent): void;
  /** resolves when every queue is empty and nothing is in flight */
  flush(): Promise<void>;
  /** flushes for at most stopTimeoutMs, then drops what is left (with a warning) */
  stop(): Promise<void>;
}

/** `scheme://host/…`: a webhook URL's path is its credential (Slack's are), so no log line shows it. */
export function redactedUrl(url: string): string {
  try {
    const u = new URL(url);
    return `${u.protocol}//${u.host}/…`;
  } catch {
    return '(not a URL)';
  }
}

const ALLOWED = 'an http:// or https:// URL, or slack+ before one for a Slack incoming webhook (slack+https://hooks.slack.com/services/…)';

/** The --notify value: `URL` (JSON events) or `slack+URL` (Slack's format). */
export function parseNotifyTarget(spec: string): NotifyTarget | { error: string } {
  const slack = spec.startsWith('slack+');
  const rest = slack ? spec.slice('slack+'.length) : spec;
  let u: URL;
  try {
    u = new URL(rest);
  } catch {
    // The value is not echoed: a mistyped webhook URL is still a secret.
    return { error: `not a URL; expected ${ALLOWED}` };
  }
  if (u.protocol !== 'http:' && u.protocol !== 'https:') return { error: `${printable(u.protocol)} URLs are not allowed; expected ${ALLOWED}` };
  // fetch refuses a URL holding credentials; say so now rather than at the first event.
  if (u.username || u.password) return { error: `${redactedUrl(rest)}: a user or password in the URL is not allowed; expected ${ALLOWED}` };
  return { url: u.href, format: slack ? 'slack' : 'json' };
}

/** An event as one receiver will get it, rendered when queued: a caller changing `details` later changes nothing. */
interface Job {
  kind: NotifyEventKind;
  at: string;
  body: Uint8Array<ArrayBuffer>;
}

interface Window {
  kind: NotifyEventKind;
  subject?: string;
  openedAt: number;
  suppressed: number;
}

interface Lane {
  target: NotifyTarget;
  label: string;
  queue: Job[];
  /** a drain is running; its promise is `drained` */
  sending: boolean;
  drained: Promise<void>;
  windows: Map<string, Window>;
}

// An event of one kind ends the state the other reported: failed → recovered → failed again
// must reach the receiver even inside the throttle window, or it would believe all is well.
const OPPOSITE: Partial<Record<NotifyEventKind, NotifyEventKind>> = {
  'reconcile-failed': 'reconcile-recovered',
  'reconcile-recovered': 'reconcile-failed',
  'revision-rejected': 'revision-applied',
  'revision-applied': 'revision-rejected',
};

const WINDOW_LIMIT = 1000;

export function createNotifier(opts: NotifierOptions): Notifier {
  const { logger } = opts;
  const now = opts.now ?? Date.now;
  const throttleMs = (opts.throttleSeconds ?? 300) * 1000;
  const retries = opts.retries ?? 5;
  const backoffMs = opts.backoffMs ?? 1000;
  const maxBackoffMs = opts.maxBackoffMs ?? 60_000;
  const fetchTimeoutMs = opts.fetchTimeoutMs ?? 10_000;
  const queueLimit = opts.queueLimit ?? 1000;
  // Aborts in-flight requests and backoff sleeps once stop()'s deadline has passed.
  const halt = new AbortController();
  const lanes: Lane[] = opts.targets.map((target) => ({ target, label: redactedUrl(target.url), queue: [], windows: new Map(), sending: false, drained: Promise.resolve() }));

  /** The number of events this one stands for that the window held back, or undefined to hold it back too. */
  function admit(lane: Lane, e: NotifyEvent): number | undefined {
    const key = JSON.stringify([e.kind, e.subject ?? null, e.revision ?? null]);
    const t = now();
    const w = lane.windows.get(key);
    if (w && t - w.openedAt < throttleMs) {
      w.suppressed++;
      return undefined;
    }
    const suppressed = w?.suppressed ?? 0;
    lane.windows.set(key, { kind: e.kind, subject: e.subject, openedAt: t, suppressed: 0 });
    const opposite = OPPOSITE[e.kind];
    for (const o of lane.windows.values()) if (o.kind === opposite && o.subject === e.subject) o.openedAt = Number.NEGATIVE_INFINITY;
    // Keys carry revisions, so the map would grow for the life of the service; a closed window
    // holding no count says nothing.
    if (lane.windows.size > WINDOW_LIMIT) for (const [k, o] of lane.windows) if (t - o.openedAt >= throttleMs && o.suppressed === 0) lane.windows.delete(k);
    return suppressed;
  }

  function render(format: NotifyTarget['format'], e: NotifyEvent, suppressed: number): string {
    if (format === 'slack') {
      // Slack reads text as mrkdwn: escaped, a message holding "<!channel>" cannot ping anyone.
      const esc = (s: string) => s.replace(/&/g, '&amp;').replace(/</g, '&lt;').replace(/>/g, '&gt;');
      return JSON.stringify({ text: esc(`${e.kind} on ${e.host}: ${e.message}${suppressed > 0 ? ` (${suppressed} similar suppressed)` : ''}`) });
    }
    const details = suppressed > 0 ? { ...e.details, suppressed } : e.details;
    return JSON.stringify({ source: 'virt-reconcile', kind: e.kind, host: e.host, message: e.message, revision: e.revision, subject: e.subject, at: e.at, details });
  }

  type Outcome = { ok: true } | { ok: false; retry: boolean; reason: string; waitMs?: number };

  async function post(lane: Lane, body: Uint8Array<ArrayBuffer>, headers: Record<string, string>): Promise<Outcome> {
    const { url } = lane.target;
    const { pathname, search } = new URL(url);
    // A receiver's error text or a network error may repeat the URL, or just its path.
    const scrub = (s: string) => {
      let out = s.split(url).join(lane.label);
      for (const p of [pathname + search, pathname]) if (p.length > 1) out = out.split(p).join('/…');
      return printable(out).slice(0, 200);
    };
    // A timer of its own, not AbortSignal.timeout inside AbortSignal.any: on Node 20 the combined
    // signal can be collected and its timeout then never fires (a hanging receiver held forever).
    const ac = new AbortController();
    let timedOut = false;
    const timer = setTimeout(() => {
      timedOut = true;
      ac.abort();
    }, fetchTimeoutMs);
    const onHalt = () => ac.abort();
    halt.signal.addEventListener('abort', onHalt);
    try {
      // A redirect is not followed: the event (and its signature) goes to the URL given or nowhere.
      const res = await fetch(url, { method: 'POST', body, headers, signal: ac.signal, redirect: 'manual' });
      // At most a few KB of the answer are read (the text helps with a refusal), then the rest is dropped.
      const text = await readSome(res, 4096);
      if (res.status >= 300 && res.status < 400) return { ok: false, retry: false, reason: `HTTP ${res.status}: a redirect, not followed (give the URL it points at)` };
      if (res.ok) return { ok: true };
      const reason = `HTTP ${res.status}${text ? ` ${scrub(text.trim())}` : ''}`;
      const retry = res.status === 429 || res.status >= 500;
      const after = Number(res.headers.get('retry-after') ?? Number.NaN);
      const waitMs = (res.status === 429 || res.status === 503) && Number.isFinite(after) && after >= 0 ? Math.min(after * 1000, maxBackoffMs) : undefined;
      return { ok: false, retry, reason, waitMs };
    } catch (err) {
      const e = err as Error & { cause?: { code?: string; message?: string } };
      const reason = timedOut || e.name === 'TimeoutError' ? `no answer within ${fetchTimeoutMs} ms` : (e.cause?.code ?? e.cause?.message ?? e.message);
      return { ok: false, retry: true, reason: scrub(reason) };
    } finally {
      clearTimeout(timer);
      halt.signal.removeEventListener('abort', onHalt);
    }
  }

  async function deliver(lane: Lane, job: Job): Promise<void> {
    const secret = lane.target.secret ?? opts.secret;
    const headers: Record<string, string> = { 'content-type': 'application/json', 'user-agent': 'virt-reconcile', 'x-virt-reconcile-event': job.kind };
    // GitHub's X-Hub-Signature-256 scheme, over the exact bytes sent, so receivers can reuse their check.
    if (secret !== undefined) headers['x-virt-reconcile-signature-256'] = `sha256=${createHmac('sha256', secret).update(job.body).digest('hex')}`;
    let tries = 0;
    for (;;) {
      tries++;
      const r = await post(lane, job.body, headers);
      if (r.ok || halt.signal.aborted) return;
      if (!r.retry) {
        logger.error(`notify ${lane.label}: ${job.kind} refused with ${r.reason}; not retried`);
        return;
      }
      if (tries > retries) {
        logger.error(`notify ${lane.label}: gave up on ${job.kind} after ${tries} tries: ${r.reason}`);
        return;
      }
      const wait = r.waitMs ?? Math.min(backoffMs * 2 ** (tries - 1), maxBackoffMs);
      const slept = await sleep(wait, true, { signal: halt.signal }).catch(() => false);
      if (!slept) return;
    }
  }

  async function drain(lane: Lane): Promise<void> {
    try {
      while (lane.queue.length > 0 && !halt.signal.aborted) {
        const job = lane.queue.shift()!;
        // Nothing here should throw; if something does, a rejected drain would take the service down.
        await deliver(lane, job).catch((err: Error) => logger.error(`notify ${lane.label}: ${job.kind} not sent: ${err.message}`));
      }
    } finally {
      // Cleared in the same turn as the last look at the queue: an event queued at any moment
      // is either seen by this loop or starts the next drain.
      lane.sending = false;
    }
  }

  function kick(lane: Lane): void {
    if (lane.sending || halt.signal.aborted) return;
    lane.sending = true;
    lane.drained = drain(lane);
  }

  async function flush(): Promise<void> {
    while (lanes.some((l) => l.sending)) await Promise.all(lanes.map((l) => l.drained));
  }

  return {
    notify(e) {
      try {
        if (halt.signal.aborted) return logger.warn(`notify: stopped; ${e.kind} not sent`);
        const event = { ...e, at: e.at ?? new Date(now()).toISOString() };
        for (const lane of lanes) {
          const suppressed = admit(lane, event);
          if (suppressed === undefined) continue;
          if (lane.queue.length >= queueLimit) {
            const dropped = lane.queue.shift()!;
            logger.warn(`notify ${lane.label}: ${queueLimit} events waiting; dropped the oldest (${dropped.kind} at ${dropped.at})`);
          }
          lane.queue.push({ kind: event.kind, at: event.at, body: new TextEncoder().encode(render(lane.target.format, event, suppressed)) });
          kick(lane);
        }
      } catch (err) {
        logger.error(`notify: ${e?.kind} not queued: ${(err as Error).message}`);
      }
    },
    flush,
    async stop() {
      const deadline = sleep(opts.stopTimeoutMs ?? 5000, 'late' as const, { ref: false });
      const outcome = await Promise.race([flush().then(() => 'done' as const), deadline]);
      halt.abort();
      if (outcome === 'late') {
        for (const lane of lanes) {
          const left = lane.queue.length + (lane.sending ? 1 : 0);
          lane.queue.length = 0;
          if (left > 0) logger.warn(`notify ${lane.label}: stopping; ${left} event(s) not delivered`);
        }
      }
      await flush();
    },
  };
}

/** The start of a response's body (at most `max` bytes, as text); the rest is cancelled, never read. */
async function readSome(res: Response, max: number): Promise<string> {
  const reader = res.body?.getReader();
  if (!reader) return '';
  const chunks: Uint8Array[] = [];
  let n = 0;
  try {
    while (n < max) {
      const { done, value } = await reader.read();
      if (done) break;
      chunks.push(value);
      n += value.length;
    }
  } catch {
    /* a body cut short says nothing more */
  } finally {
    await reader.cancel().catch(() => undefined);
  }
  return Buffer.concat(chunks).subarray(0, max).toString('utf8');
}
