// The watch service's HTTP endpoints: health, readiness, metrics, status (JSON and HTML),
// and the git webhook (HMAC-SHA256, as GitHub and Gitea sign: X-Hub-Signature-256).
import { createHmac, timingSafeEqual } from 'node:crypto';
import { createServer, type Server } from 'node:http';
import type { Metrics } from './metrics.js';
import type { WatchService } from './service.js';
import { renderStatusPage } from './status-page.js';

/** GitHub's and Gitea's push payloads are far below this; anything larger is not a webhook. */
export const MAX_WEBHOOK_BODY = 1024 * 1024;

export function signatureValid(secret: string, body: Buffer, header: string | undefined): boolean {
  if (!header?.startsWith('sha256=')) return false;
  const want = Buffer.from(`sha256=${createHmac('sha256', secret).update(body).digest('hex')}`);
  const got = Buffer.from(header);
  return want.length === got.length && timingSafeEqual(want, got);
}

export function startHttp(opts: { host: string; port: number; service: WatchService; metrics: Metrics; webhookSecret?: string; log: (l: string) => void }): Promise<Server> {
  const { service, metrics } = opts;
  const server = createServer((req, res) => {
    const chunks: Buffer[] = [];
    // Bodies are bounded before anything else looks at them: only the webhook takes one.
    const limit = req.method === 'POST' && req.url?.split('?')[0] === '/hooks/git' ? MAX_WEBHOOK_BODY : 0;
    let size = 0;
    let refused = false;
    const declared = Number(req.headers['content-length'] ?? 0);
    if (declared > limit) {
      refused = true;
      res.writeHead(413, { 'content-type': 'text/plain', connection: 'close' });
      res.end(limit ? `body over ${limit} bytes\n` : 'this route takes no body\n');
      req.destroy();
      return;
    }
    req.on('data', (c: Buffer) => {
      size += c.length;
      if (size > limit) {
        if (!refused) {
          refused = true;
          res.writeHead(413, { 'content-type': 'text/plain', connection: 'close' });
          res.end(limit ? `body over ${limit} bytes\n` : 'this route takes no body\n');
        }
        req.destroy();
        return;
      }
      chunks.push(c);
    });
    req.on('end', () => {
      if (refused) return;
      void (async () => {
        const url = new URL(req.url ?? '/', 'http://localhost');
        // HEAD is GET without the body.
        const head = req.method === 'HEAD';
        const method = head ? 'GET' : req.method;
        const send = (code: number, type: string, body: string) => {
          res.writeHead(code, { 'content-type': type, 'cache-control': 'no-store', 'content-length': Buffer.byteLength(body) });
          res.end(head ? undefined : body);
        };
        if (method === 'GET' && url.pathname === '/healthz') return send(200, 'text/plain', 'ok\n');
        if (method === 'GET' && url.pathname === '/readyz') {
          // Ready reflects the last reconcile, as Flux's Ready condition does.
          const s = service.status;
          return s.ready ? send(200, 'text/plain', 'ready\n') : send(503, 'text/plain', `not ready: ${s.notReadyReason ?? 'no reconcile has completed yet'}\n`);
        }
        if (method === 'GET' && url.pathname === '/metrics') return send(200, metrics.registry.contentType, await metrics.registry.metrics());
        if (method === 'GET' && url.pathname === '/status') return send(200, 'application/json', `${JSON.stringify(service.statusNow(), null, 2)}\n`);
        if (method === 'GET' && url.pathname === '/') return send(200, 'text/html; charset=utf-8', renderStatusPage(service.statusNow()));
        if (req.method === 'POST' && url.pathname === '/hooks/git') {
          if (!opts.webhookSecret) return send(404, 'text/plain', 'webhook not configured (--webhook-secret-file)\n');
          if (!signatureValid(opts.webhookSecret, Buffer.concat(chunks), req.headers['x-hub-signature-256'] as string | undefined)) {
            opts.log('webhook refused: bad or missing X-Hub-Signature-256');
            return send(401, 'text/plain', 'bad signature\n');
          }
          opts.log('webhook: signature valid, fetching and reconciling');
          service.trigger('webhook');
          return send(202, 'text/plain', 'reconcile triggered\n');
        }
        return send(404, 'text/plain', 'not found\n');
      })().catch((e: Error) => {
        res.writeHead(500);
        res.end(`${e.message}\n`);
      });
    });
  });
  return new Promise((resolve, reject) => {
    server.once('error', reject);
    server.listen(opts.port, opts.host, () => resolve(server));
  });
}
