// Webhook notifications (src/watch/notify.ts) against a real local receiver: what arrives, how it
// is signed, retried, throttled and ordered, and what the log may never show.
import { createHmac } from 'node:crypto';
import http, { type IncomingHttpHeaders } from 'node:http';
import type { AddressInfo } from 'node:net';
import { afterEach, describe, expect, it } from 'vitest';
import { createNotifier, type NotifyEvent, parseNotifyTarget, redactedUrl } from '../src/watch/notify.js';

interface Received {
  path: string;
  headers: IncomingHttpHeaders;
  body: string;
  at: number;
}

interface Answer {
  status: number;
  headers?: Record<string, string>;
  body?: string;
  /** never answer (a receiver that hangs) */
  hang?: boolean;
  /** answer after this long */
  delayMs?: number;
}

interface Receiver {
  url: string;
  requests: Received[];
  /** the most requests in flight at once */
  maxInFlight: number;
  close(): Promise<void>;
}

const open: Receiver[] = [];
afterEach(async () => {
  await Promise.all(open.splice(0).map((r) => r.close()));
});

/** A webhook receiver on 127.0.0.1; `answer` is told which request (0-based) this is. */
async function receiver(answer: (n: number, r: Received) => Answer = () => ({ status: 200 })): Promise<Receiver> {
  let inFlight = 0;
  const server = http.createServer((req, res) => {
    const chunks: Buffer[] = [];
    req.on('data', (c: Buffer) => chunks.push(c));
    req.on('end', () => {
      const r: Received = { path: req.url!, headers: req.headers, body: Buffer.concat(chunks).toString('utf8'), at: Date.now() };
      const a = answer(rec.requests.length, r);
      rec.requests.push(r);
      inFlight++;
      rec.maxInFlight = Math.max(rec.maxInFlight, inFlight);
      if (a.hang) return;
      setTimeout(() => {
        inFlight--;
        res.writeHead(a.status, a.headers);
        res.end(a.body ?? '');
      }, a.delayMs ?? 0);
    });
  });
  await new Promise<void>((resolve) => server.listen(0, '127.0.0.1', resolve));
  const { port } = server.address() as AddressInfo;
  const rec: Receiver = {
    url: `http://127.0.0.1:${port}/hooks/T0001/B0002/s3cr3tWebhookPath`,
    requests: [],
    maxInFlight: 0,
    close: () => {
      server.closeAllConnections();
      return new Promise((resolve) => server.close(() => resolve()));
    },
  };
  open.push(rec);
  return rec;
}

function capture() {
  const lines: { level: string; msg: string }[] = [];
  const at = (level: string) => (msg: string) => lines.push({ level, msg });
  return { lines, logger: { info: at('info'), warn: at('warn'), error: at('error') } };
}

const body = (r: Received | undefined) => JSON.parse(r!.body) as Record<string, unknown>;
const ev = (over: Partial<NotifyEvent> = {}): NotifyEvent => ({ kind: 'backup-failed', host: 'kvm1', message: 'backup nightly failed', subject: 'nightly', ...over });

describe('what arrives', () => {
  it('JSON format: the fields, the headers, and an HMAC over the exact bytes that verifies with the secret', async () => {
    const r = await receiver();
    const secret = 'hunter2-but-longer';
    const n = createNotifier({ targets: [{ url: r.url, format: 'json' }], secret, logger: capture().logger });
    n.notify({ kind: 'revision-applied', host: 'kvm1', message: 'applied 3 changes', revision: 'abc123', details: { changes: 3, note: 'é ✓' } });
    await n.flush();

    expect(r.requests).toHaveLength(1);
    const got = r.requests[0]!;
    expect(got.path).toBe('/hooks/T0001/B0002/s3cr3tWebhookPath');
    const b = body(got);
    expect(b).toMatchObject({
      source: 'virt-reconcile',
      kind: 'revision-applied',
      host: 'kvm1',
      message: 'applied 3 changes',
      revision: 'abc123',
      details: { changes: 3, note: 'é ✓' },
    });
    expect('subject' in b).toBe(false);
    expect(Number.isNaN(Date.parse(String(b.at)))).toBe(false);
    expect(Math.abs(Date.parse(String(b.at)) - Date.now())).toBeLessThan(10_000);
    expect(got.headers['content-type']).toBe('application/json');
    expect(got.headers['user-agent']).toBe('virt-reconcile');
    expect(got.headers['x-virt-reconcile-event']).toBe('revision-applied');
    const want = `sha256=${createHmac('sha256', secret).update(Buffer.from(got.body, 'utf8')).digest('hex')}`;
    expect(got.headers['x-virt-reconcile-signature-256']).toBe(want);
    expect(want).not.toBe(`sha256=${createHmac('sha256', 'another secret').update(got.body).digest('hex')}`);
  });

  it('an event that has its time keeps it', async () => {
    const r = await receiver();
    const n = createNotifier({ targets: [{ url: r.url, format: 'json' }], logger: capture().logger });
    n.notify(ev({ at: '2024-01-02T03:04:05.000Z' }));
    await n.flush();
    expect(body(r.requests[0]).at).toBe('2024-01-02T03:04:05.000Z');
  });

  it("Slack format: text only, mentions escaped, no signature without a secret; a target's own secret wins over the notifier's", async () => {
    const slack = await receiver();
    const signed = await receiver();
    const n = createNotifier({
      targets: [
        { url: slack.url, format: 'slack' },
        { url: signed.url, format: 'json', secret: 'target-own-secret' },
      ],
      logger: capture().logger,
    });
    n.notify({ kind: 'drift-corrected', host: 'kvm1', message: 'pool <!channel> & co re-started', subject: 'pool/vm-storage' });
    await n.flush();

    expect(body(slack.requests[0])).toEqual({ text: 'drift-corrected on kvm1: pool &lt;!channel&gt; &amp; co re-started' });
    expect(slack.requests[0]!.headers['x-virt-reconcile-signature-256']).toBeUndefined();
    const s = signed.requests[0]!;
    expect(s.headers['x-virt-reconcile-signature-256']).toBe(`sha256=${createHmac('sha256', 'target-own-secret').update(s.body).digest('hex')}`);
  });
  it('an event that cannot be sent as JSON: notify() does not throw, says so, and the next ones still go', async () => {
    const r = await receiver();
    const log = capture();
    const n = createNotifier({ targets: [{ url: r.url, format: 'json' }], logger: log.logger });
    expect(() => n.notify(ev({ subject: 'big', details: { size: 10n } }))).not.toThrow();
    const details: Record<string, unknown> = { step: 'before' };
    n.notify(ev({ subject: 'ok', details }));
    // What was queued is what is sent: the caller reusing its object changes nothing.
    details.step = 'after';
    await n.flush();
    expect(r.requests.map((q) => body(q).details)).toEqual([{ step: 'before' }]);
    expect(log.lines).toHaveLength(1);
    expect(log.lines[0]!.msg).toMatch(/^notify: backup-failed not queued: .*BigInt/);
  });
});

describe('retries', () => {
  it('503 twice then 200: delivered on the third try, the same bytes each time, nothing logged', async () => {
    const r = await receiver((i) => ({ status: i < 2 ? 503 : 200 }));
    const log = capture();
    const n = createNotifier({ targets: [{ url: r.url, format: 'json' }], logger: log.logger, backoffMs: 20 });
    n.notify(ev());
    await n.flush();
    expect(r.requests).toHaveLength(3);
    expect(new Set(r.requests.map((q) => q.body)).size).toBe(1);
    // Exponential: the second wait (40 ms) is longer than the first (20 ms).
    expect(r.requests[1]!.at - r.requests[0]!.at).toBeGreaterThanOrEqual(15);
    expect(r.requests[2]!.at - r.requests[1]!.at).toBeGreaterThanOrEqual(35);
    expect(log.lines).toEqual([]);
  });

  it('429 with Retry-After: waits as long as it says, not the backoff', async () => {
    const r = await receiver((i) => (i === 0 ? { status: 429, headers: { 'retry-after': '1' } } : { status: 200 }));
    const n = createNotifier({ targets: [{ url: r.url, format: 'json' }], logger: capture().logger, backoffMs: 5 });
    n.notify(ev());
    await n.flush();
    expect(r.requests).toHaveLength(2);
    expect(r.requests[1]!.at - r.requests[0]!.at).toBeGreaterThanOrEqual(900);
  });

  it('429 with a Retry-After longer than the cap: waits only the cap', async () => {
    const r = await receiver((i) => (i === 0 ? { status: 429, headers: { 'retry-after': '3600' } } : { status: 200 }));
    const n = createNotifier({ targets: [{ url: r.url, format: 'json' }], logger: capture().logger, backoffMs: 5, maxBackoffMs: 100 });
    const started = Date.now();
    n.notify(ev());
    await n.flush();
    expect(r.requests).toHaveLength(2);
    expect(Date.now() - started).toBeLessThan(5_000);
  });

  it('400: not retried, logged once with the status', async () => {
    const r = await receiver(() => ({ status: 400, body: 'invalid_payload' }));
    const log = capture();
    const n = createNotifier({ targets: [{ url: r.url, format: 'slack' }], logger: log.logger, backoffMs: 5 });
    n.notify(ev());
    await n.flush();
    expect(r.requests).toHaveLength(1);
    expect(log.lines).toHaveLength(1);
    expect(log.lines[0]!.level).toBe('error');
    expect(log.lines[0]!.msg).toContain('HTTP 400 invalid_payload');
    expect(log.lines[0]!.msg).toContain('backup-failed');
  });

  it('a receiver that keeps failing: 1 + retries tries, then one line saying it gave up', async () => {
    const r = await receiver(() => ({ status: 500 }));
    const log = capture();
    const n = createNotifier({ targets: [{ url: r.url, format: 'json' }], logger: log.logger, backoffMs: 5, retries: 2 });
    n.notify(ev());
    await n.flush();
    expect(r.requests).toHaveLength(3);
    expect(log.lines.map((l) => l.msg)).toEqual([`notify ${redactedUrl(r.url)}: gave up on backup-failed after 3 tries: HTTP 500`]);
  });

  it('a receiver that does not answer: timed out and retried; one that is gone: connection refused', async () => {
    const hung = await receiver(() => ({ status: 200, hang: true }));
    const gone = await receiver();
    await gone.close();
    const log = capture();
    const n = createNotifier({
      targets: [
        { url: hung.url, format: 'json' },
        { url: gone.url, format: 'json' },
      ],
      logger: log.logger,
      backoffMs: 5,
      retries: 1,
      fetchTimeoutMs: 150,
    });
    n.notify(ev());
    await n.flush();
    expect(hung.requests).toHaveLength(2);
    expect(log.lines.map((l) => l.msg).sort()).toEqual(
      [
        `notify ${redactedUrl(hung.url)}: gave up on backup-failed after 2 tries: no answer within 150 ms`,
        `notify ${redactedUrl(gone.url)}: gave up on backup-failed after 2 tries: ECONNREFUSED`,
      ].sort(),
    );
  });
});

describe('throttle', () => {
  it('the same (kind, subject) once per window; the next one after it says how many were held back', async () => {
    const r = await receiver();
    let clock = 1_000_000;
    const n = createNotifier({ targets: [{ url: r.url, format: 'json' }], logger: capture().logger, throttleSeconds: 300, now: () => clock });
    n.notify(ev({ message: 'first' }));
    clock += 10_000;
    n.notify(ev({ message: 'held back 1' }));
    clock += 10_000;
    n.notify(ev({ message: 'held back 2' }));
    n.notify(ev({ subject: 'weekly', message: 'another backup' }));
    n.notify(ev({ kind: 'backup-suspended', message: 'another kind' }));
    await n.flush();
    expect(r.requests.map((q) => body(q).message)).toEqual(['first', 'another backup', 'another kind']);
    expect(body(r.requests[0]).details).toBeUndefined();

    clock += 300_000;
    n.notify(ev({ message: 'after the window', details: { code: 1 } }));
    clock += 1_000;
    n.notify(ev({ message: 'held back again' }));
    await n.flush();
    expect(r.requests).toHaveLength(4);
    expect(body(r.requests[3])).toMatchObject({ message: 'after the window', details: { code: 1, suppressed: 2 } });
  });

  it('Slack: the count is in the text', async () => {
    const r = await receiver();
    let clock = 0;
    const n = createNotifier({ targets: [{ url: r.url, format: 'slack' }], logger: capture().logger, throttleSeconds: 60, now: () => clock });
    n.notify(ev({ message: 'a' }));
    n.notify(ev({ message: 'b' }));
    clock += 61_000;
    n.notify(ev({ message: 'c' }));
    await n.flush();
    expect(r.requests.map((q) => body(q).text)).toEqual(['backup-failed on kvm1: a', 'backup-failed on kvm1: c (1 similar suppressed)']);
  });

  it('a state change is never held back: failed, recovered, failed, recovered inside one window all arrive', async () => {
    const r = await receiver();
    const n = createNotifier({ targets: [{ url: r.url, format: 'json' }], logger: capture().logger, throttleSeconds: 300 });
    const failed: NotifyEvent = { kind: 'reconcile-failed', host: 'kvm1', message: 'virsh failed', revision: 'r1' };
    const recovered: NotifyEvent = { kind: 'reconcile-recovered', host: 'kvm1', message: 'ok again', revision: 'r1' };
    for (const e of [failed, failed, recovered, failed, failed, recovered]) n.notify(e);
    await n.flush();
    expect(r.requests.map((q) => body(q).kind)).toEqual(['reconcile-failed', 'reconcile-recovered', 'reconcile-failed', 'reconcile-recovered']);
    expect(body(r.requests[2]).details).toEqual({ suppressed: 1 });
  });

  it('a new revision is news: revision-applied for r1 then r2 both arrive, r2 twice only once', async () => {
    const r = await receiver();
    const n = createNotifier({ targets: [{ url: r.url, format: 'json' }], logger: capture().logger });
    for (const revision of ['r1', 'r2', 'r2']) n.notify({ kind: 'revision-applied', host: 'kvm1', message: 'applied', revision });
    await n.flush();
    expect(r.requests.map((q) => body(q).revision)).toEqual(['r1', 'r2']);
  });
});

describe('queues', () => {
  it('per receiver: in order, one at a time, a retried event before the next; a slow receiver does not hold up another', async () => {
    const slow = await receiver((i) => (i === 0 ? { status: 503 } : { status: 200, delayMs: 30 - (i % 3) * 10 }));
    const fast = await receiver();
    const n = createNotifier({
      targets: [
        { url: slow.url, format: 'json' },
        { url: fast.url, format: 'json' },
      ],
      logger: capture().logger,
      backoffMs: 1000,
    });
    const messages = Array.from({ length: 12 }, (_, i) => `event ${i}`);
    for (const m of messages) n.notify(ev({ subject: m, message: m }));
    // notify() does not wait for the network.
    expect(slow.requests).toHaveLength(0);
    for (let waited = 0; fast.requests.length < messages.length && waited < 5_000; waited += 10) await new Promise((resolve) => setTimeout(resolve, 10));
    // The fast one is done while the slow one is still backing off from its 503.
    expect(fast.requests.map((q) => body(q).message)).toEqual(messages);
    expect(slow.requests).toHaveLength(1);
    await n.flush();
    expect(slow.requests.map((q) => body(q).message)).toEqual(['event 0', ...messages]);
    expect(slow.maxInFlight).toBe(1);
    expect(fast.maxInFlight).toBe(1);
  });

  it('bounded: when full the oldest waiting event goes, with a warning', async () => {
    const r = await receiver((i) => ({ status: 200, delayMs: i === 0 ? 300 : 0 }));
    const log = capture();
    const n = createNotifier({ targets: [{ url: r.url, format: 'json' }], logger: log.logger, queueLimit: 3 });
    // e0 leaves the queue at once (it is being sent); e1..e5 then wait in a queue of 3.
    n.notify(ev({ subject: 'e0', message: 'e0' }));
    for (const m of ['e1', 'e2', 'e3', 'e4', 'e5']) n.notify(ev({ subject: m, message: m }));
    await n.flush();
    expect(r.requests.map((q) => body(q).message)).toEqual(['e0', 'e3', 'e4', 'e5']);
    expect(log.lines.filter((l) => l.level === 'warn')).toHaveLength(2);
    expect(log.lines[0]!.msg).toContain('dropped the oldest (backup-failed at');
  });

  it('stop(): waits for the queue up to its deadline, then drops the rest with a warning; later events are not sent', async () => {
    const r = await receiver(() => ({ status: 200, hang: true }));
    const log = capture();
    const n = createNotifier({ targets: [{ url: r.url, format: 'json' }], logger: log.logger, stopTimeoutMs: 200, fetchTimeoutMs: 60_000 });
    n.notify(ev({ subject: 'a' }));
    n.notify(ev({ subject: 'b' }));
    const started = Date.now();
    await n.stop();
    expect(Date.now() - started).toBeLessThan(2_000);
    expect(r.requests).toHaveLength(1);
    expect(log.lines.map((l) => l.msg)).toEqual([`notify ${redactedUrl(r.url)}: stopping; 2 event(s) not delivered`]);
    n.notify(ev({ subject: 'c' }));
    await n.flush();
    expect(r.requests).toHaveLength(1);
    expect(log.lines.at(-1)!.msg).toBe('notify: stopped; backup-failed not sent');
  });

  it('stop() with nothing waiting returns at once and says nothing', async () => {
    const r = await receiver();
    const log = capture();
    const n = createNotifier({ targets: [{ url: r.url, format: 'json' }], logger: log.logger });
    n.notify(ev());
    const started = Date.now();
    await n.stop();
    expect(Date.now() - started).toBeLessThan(1_000);
    expect(r.requests).toHaveLength(1);
    expect(log.lines).toEqual([]);
  });
});

describe('what the log may show', () => {
  it('never the secret nor the URL path, even when the receiver echoes the URL back', async () => {
    const secret = 'topsecret-hmac-key-42';
    const echo = await receiver((i, q) => ({ status: i % 2 === 0 ? 400 : 500, body: `no such hook: ${echo.url} ${q.path} ${q.headers['x-virt-reconcile-signature-256']}` }));
    const gone = await receiver();
    await gone.close();
    const log = capture();
    const n = createNotifier({
      targets: [
        { url: echo.url, format: 'json' },
        { url: gone.url, format: 'slack' },
      ],
      secret,
      logger: log.logger,
      backoffMs: 5,
      retries: 1,
      queueLimit: 1,
    });
    for (const s of ['a', 'b', 'c', 'd']) n.notify(ev({ subject: s }));
    await n.stop();

    expect(echo.requests.length).toBeGreaterThan(0);
    expect(log.lines.length).toBeGreaterThan(2);
    for (const { msg } of log.lines) {
      expect(msg).not.toContain(secret);
      expect(msg).not.toContain('s3cr3tWebhookPath');
      expect(msg).not.toContain('/hooks/');
      expect(msg).toMatch(/^notify http:\/\/127\.0\.0\.1:\d+\/…: /);
    }
    // The receiver's words are still there, with the URL in its redacted form.
    expect(log.lines.some((l) => l.msg.includes(`HTTP 400 no such hook: ${redactedUrl(echo.url)}`))).toBe(true);
  });

  it('redactedUrl: scheme, host and port only', () => {
    expect(redactedUrl('https://hooks.slack.com/services/T000/B000/XXXX')).toBe('https://hooks.slack.com/…');
    expect(redactedUrl('http://user:pw@127.0.0.1:8080/x?token=y')).toBe('http://127.0.0.1:8080/…');
    expect(redactedUrl('garbage')).toBe('(not a URL)');
  });
});

describe('parseNotifyTarget', () => {
  const good: [reason: string, spec: string, url: string, format: 'json' | 'slack'][] = [
    ['an https URL: JSON events', 'https://hooks.example/x', 'https://hooks.example/x', 'json'],
    ['http with a port and a query', 'http://10.0.0.5:8080/hook?t=1', 'http://10.0.0.5:8080/hook?t=1', 'json'],
    ['slack+: Slack format', 'slack+https://hooks.slack.com/services/T/B/X', 'https://hooks.slack.com/services/T/B/X', 'slack'],
  ];
  for (const [reason, spec, url, format] of good) it(`accepts ${reason}`, () => expect(parseNotifyTarget(spec)).toEqual({ url, format }));

  const bad: [reason: string, spec: string][] = [
    ['a file: URL', 'file:///etc/passwd'],
    ['a file: URL behind slack+', 'slack+file:///etc/passwd'],
    ['ftp', 'ftp://example.com/x'],
    ['an unknown format prefix', 'teams+https://example.com/x'],
    ['garbage', 'not a url at all'],
    ['a host without a scheme', 'hooks.example/x'],
    ['slack+ alone', 'slack+'],
    ['empty', ''],
    ['credentials in the URL (fetch refuses them)', 'https://user:pw@hooks.example/x'],
  ];
  for (const [reason, spec] of bad) {
    it(`refuses ${reason}: ${JSON.stringify(spec)}`, () => {
      const r = parseNotifyTarget(spec);
      expect('error' in r).toBe(true);
      const { error } = r as { error: string };
      expect(error).toContain('http://');
      expect(error).toContain('https://');
      expect(error).toContain('slack+');
      // The value may be a webhook URL with its secret path: not repeated back.
      if (spec.includes('/x')) expect(error).not.toContain('/x');
    });
  }
});

describe('hostile receivers (adversarial pass)', () => {
  const ev = { kind: 'revision-applied' as const, host: 'h', message: 'm', revision: 'r1' };
  it('a redirect is not followed: the event does not reach another host, and the refusal is logged', async () => {
    const other = await receiver();
    const rec = await receiver(() => ({ status: 307, headers: { location: other.url } }));
    const { lines, logger } = capture();
    const n = createNotifier({ targets: [{ url: rec.url, format: 'json' }], secret: 'k', logger, backoffMs: 5 });
    n.notify(ev);
    await n.flush();
    expect(rec.requests).toHaveLength(1);
    expect(other.requests).toHaveLength(0);
    expect(lines.map((l) => l.msg).join('\n')).toMatch(/a redirect, not followed/);
  });
  it('an endless answer is read only as far as a few KB: delivery ends', async () => {
    const server = http.createServer((req, res) => {
      req.resume();
      res.writeHead(200);
      const chunk = Buffer.alloc(64 * 1024, 120);
      const pump = () => {
        while (res.write(chunk)) {
          /* until the socket is full */
        }
      };
      res.on('drain', pump);
      pump();
    });
    await new Promise<void>((r) => server.listen(0, '127.0.0.1', r));
    const url = `http://127.0.0.1:${(server.address() as AddressInfo).port}/x`;
    const n = createNotifier({ targets: [{ url, format: 'json' }], logger: capture().logger, backoffMs: 5 });
    const t0 = Date.now();
    n.notify(ev);
    await n.flush();
    expect(Date.now() - t0).toBeLessThan(5_000);
    server.closeAllConnections();
    await new Promise((r) => server.close(r));
  });
});
