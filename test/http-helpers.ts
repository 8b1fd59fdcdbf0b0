// A static file server for download tests: Range on or off, a connection dropped once after
// N bytes, no Content-Length, slow, a bearer token, a redirect to another origin.
import { createReadStream } from 'node:fs';
import { stat } from 'node:fs/promises';
import http from 'node:http';
import type { AddressInfo } from 'node:net';
import path from 'node:path';

export interface Served {
  url: string;
  /** every request: path, and its Range and Authorization headers */
  requests: { path: string; range?: string; auth?: string }[];
  /** gzipEncoding: a .gz file is sent with "Content-Encoding: gzip", as many servers are set up to */
  opts: { range: boolean; dropAfter?: number; lengthless?: boolean; slowMs?: number; token?: string; redirectTo?: string; gzipEncoding?: boolean };
  close(): Promise<void>;
}

/** A static file server over `dir`: Range on or off, a connection dropped once after N bytes, no Content-Length, slow, a token, a redirect. */
export async function serve(dir: string, opts: Served['opts']): Promise<Served> {
  const requests: Served['requests'] = [];
  let dropped = false;
  const server = http.createServer(async (req, res) => {
    const p = decodeURIComponent(new URL(req.url!, 'http://x').pathname);
    requests.push({ path: p, range: req.headers.range, auth: req.headers.authorization });
    if (s.opts.redirectTo && p.startsWith('/r/')) {
      res.writeHead(302, { location: `${s.opts.redirectTo}/${p.slice(3)}` });
      return res.end();
    }
    if (s.opts.token && req.headers.authorization !== `Bearer ${s.opts.token}`) {
      res.writeHead(401);
      return res.end();
    }
    const file = path.join(dir, p);
    const st = await stat(file).catch(() => undefined);
    if (!st?.isFile()) {
      res.writeHead(404);
      return res.end();
    }
    const etag = `"${st.size}-${st.mtimeMs}"`;
    let start = 0;
    const m = /^bytes=(\d+)-$/.exec(req.headers.range ?? '');
    const headers: Record<string, string | number> = { etag, ...(s.opts.gzipEncoding && p.endsWith('.gz') ? { 'content-encoding': 'gzip' } : {}) };
    if (s.opts.range && m && (!req.headers['if-range'] || req.headers['if-range'] === etag)) {
      start = Number(m[1]);
      if (start >= st.size) {
        res.writeHead(416, { 'content-range': `bytes */${st.size}` });
        return res.end();
      }
      headers['content-range'] = `bytes ${start}-${st.size - 1}/${st.size}`;
      if (!s.opts.lengthless) headers['content-length'] = st.size - start;
      res.writeHead(206, headers);
    } else {
      if (!s.opts.lengthless) headers['content-length'] = st.size;
      res.writeHead(200, headers);
    }
    let sent = 0;
    const stream = createReadStream(file, { start, highWaterMark: 64 * 1024 });
    for await (const chunk of stream) {
      const buf = chunk as Buffer;
      if (s.opts.dropAfter !== undefined && !dropped && sent + buf.length > s.opts.dropAfter) {
        dropped = true;
        // Dropped once what was sent has left: the client has the headers and part of the body.
        res.write(buf.subarray(0, s.opts.dropAfter - sent), () => setTimeout(() => res.socket?.destroy(), 50));
        return;
      }
      sent += buf.length;
      if (!res.write(buf)) await new Promise((r) => res.once('drain', r));
      if (s.opts.slowMs) await new Promise((r) => setTimeout(r, s.opts.slowMs));
    }
    res.end();
  });
  await new Promise<void>((r) => server.listen(0, '127.0.0.1', r));
  const s: Served = {
    url: `http://127.0.0.1:${(server.address() as AddressInfo).port}`,
    requests,
    opts,
    close: () => new Promise((r) => server.close(() => r())),
  };
  return s;
}
