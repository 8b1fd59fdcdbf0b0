// watch --notify end to end: the service posts what happens (a revision applied, one rejected,
// drift corrected) to a receiver started here, signed with the secret of --notify-secret-file,
// and the secret and the webhook's path appear in none of its output.
import { createHmac } from 'node:crypto';
import http from 'node:http';
import type { AddressInfo } from 'node:net';
import { rm, writeFile } from 'node:fs/promises';
import path from 'node:path';
import { afterAll, afterEach, describe, expect, it } from 'vitest';
import { sandbox, type Sandbox } from './helpers.js';
import { procs, startWatch, until } from './watch-helpers.js';

let sb: Sandbox;
let server: http.Server;
afterEach(() => {
  for (const p of procs.splice(0)) if (p.exitCode === null) p.kill('SIGKILL');
});
afterAll(async () => {
  await new Promise((r) => server?.close(r));
  await sb?.cleanup();
});

describe('watch --notify', () => {
  it('posts applied, rejected and drift events, signed; the secret and the path stay out of the log', { timeout: 90_000 }, async () => {
    sb = await sandbox('watch-notify');
    const got: { kind: string; host: string; message: string; signatureOk: boolean }[] = [];
    const secret = 'n0tify-s3cret';
    server = http.createServer((req, res) => {
      const chunks: Buffer[] = [];
      req.on('data', (d: Buffer) => chunks.push(d));
      req.on('end', () => {
        const body = Buffer.concat(chunks);
        const sig = `sha256=${createHmac('sha256', secret).update(body).digest('hex')}`;
        const e = JSON.parse(body.toString()) as { kind: string; host: string; message: string };
        got.push({ ...e, signatureOk: req.headers['x-virt-reconcile-signature-256'] === sig && req.url === '/hooks/T0KEN-PATH' });
        res.writeHead(204).end();
      });
    });
    await new Promise<void>((r) => server.listen(0, '127.0.0.1', r));
    const url = `http://127.0.0.1:${(server.address() as AddressInfo).port}/hooks/T0KEN-PATH`;
    await writeFile(path.join(sb.dir, 'notify-secret'), `${secret}\n`, { mode: 0o600 });
    const yaml = (size: string) => `version: 1\nimages:\n  n: { path: $DIR/n.qcow2, size: ${size} }\n`;
    const conf = await sb.yaml(yaml('8M'));
    // The webhook from a file: its URL stays out of the process arguments.
    await writeFile(path.join(sb.dir, 'hooks'), `# the fleet's receiver\n${url}\n`, { mode: 0o600 });
    const w = await startWatch(sb, [
      '-f',
      conf,
      '--interval',
      '2s',
      '--host',
      'hv-notify',
      '--notify-file',
      path.join(sb.dir, 'hooks'),
      '--notify-secret-file',
      path.join(sb.dir, 'notify-secret'),
    ]);
    expect(await import('node:fs/promises').then((fs) => fs.readFile(`/proc/${w.proc.pid}/cmdline`, 'utf8'))).not.toMatch(/T0KEN-PATH/);
    await until(async () => (await w.status()).appliedRevision, 'the first revision');
    await sb.yaml(yaml('16M'));
    await until(async () => got.some((e) => e.kind === 'revision-applied'), 'a revision-applied event');
    await sb.yaml(yaml('1 parsec'));
    await until(async () => got.some((e) => e.kind === 'revision-rejected'), 'a revision-rejected event');
    await sb.yaml(yaml('16M'));
    await until(async () => (await w.status()).rejectedRevision === undefined, 'the fixed revision');
    await rm(path.join(sb.dir, 'n.qcow2'));
    await until(async () => got.some((e) => e.kind === 'drift-corrected'), 'a drift-corrected event');
    expect(got.every((e) => e.signatureOk && e.host === 'hv-notify')).toBe(true);
    expect(got.find((e) => e.kind === 'revision-rejected')?.message).toMatch(/images\.n\.size/);
    expect(w.log()).not.toMatch(/T0KEN-PATH|n0tify-s3cret/);
    expect(JSON.stringify(await w.status())).not.toMatch(/T0KEN-PATH|n0tify-s3cret/);
    w.proc.kill('SIGTERM');
    expect(await w.exit()).toBe(0);
    // A bad webhook is a usage error that does not echo it.
    const bad = await sb.run('watch', '--notify', 'file:///etc/T0KEN-PATH');
    expect(bad.code).toBe(64);
    expect(bad.stderr).toMatch(/--notify: /);
    expect(bad.stderr).not.toMatch(/T0KEN-PATH/);
  });
});
