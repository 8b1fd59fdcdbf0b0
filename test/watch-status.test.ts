// The watch service tells the truth: an object it cannot reconcile is reported as such
// (status, /readyz, metrics), everything else is still healed, the failure is logged once
// when it starts and once when it clears, and logs are JSON lines when not on a terminal.
import { mkdir, readFile, rm, rmdir, writeFile } from 'node:fs/promises';
import path from 'node:path';
import { existsSync } from 'node:fs';
import { afterAll, afterEach, describe, expect, it } from 'vitest';
import { sandbox, type Sandbox } from './helpers.js';
import { procs, startWatch, until } from './watch-helpers.js';

const boxes: Sandbox[] = [];
afterEach(() => {
  for (const p of procs.splice(0)) if (p.exitCode === null) p.kill('SIGKILL');
});
afterAll(async () => {
  for (const b of boxes) await b.cleanup();
});

type Entry = { name: string; status: string; detail: string };

describe('watch status', () => {
  it('one unobservable image is refused and reported; the others are still healed; ready, metrics and logs say so', async () => {
    const sb = await sandbox('watch-honest');
    boxes.push(sb);
    const conf = await sb.yaml(`version: 1
images:
  good: { path: $DIR/good.qcow2, size: 4M }
  blocked: { path: $DIR/blocked.qcow2, size: 4M }
  overlay: { path: $DIR/overlay.qcow2, source: { backing: blocked } }
  broken: { path: $DIR/notadir/broken.qcow2, size: 1M }
`);
    // A file where the image's directory must be: its build fails at apply time.
    await writeFile(path.join(sb.dir, 'notadir'), 'x');
    // A directory where an image must be: it cannot be observed, let alone built.
    await mkdir(path.join(sb.dir, 'blocked.qcow2'));
    const w = await startWatch(sb, ['-f', conf, '--interval', '1s']);
    const st = await until(async () => {
      const s = await w.status();
      return s.lastReconcile && s.consecutiveFailures >= 3 && s;
    }, 'three failed reconciles');
    const byName = (list: Entry[], n: string) => list.find((x) => x.name === n)!;
    expect(st.ready).toBe(false);
    expect(byName(st.images, 'blocked')).toMatchObject({ status: 'refused' });
    expect(byName(st.images, 'blocked').detail).toMatch(/blocked\.qcow2 exists but is not a regular file or block device/);
    expect(byName(st.images, 'overlay')).toMatchObject({ status: 'blocked' });
    expect(byName(st.images, 'good')).toMatchObject({ status: 'in-sync' });
    expect(byName(st.images, 'broken')).toMatchObject({ status: 'failed' });
    expect(byName(st.images, 'broken').detail).toMatch(/notadir/);
    expect(existsSync(path.join(sb.dir, 'good.qcow2'))).toBe(true);
    const ready = await fetch(`${w.url}/readyz`);
    expect(ready.status).toBe(503);
    expect(await ready.text()).toMatch(/not ready: .*1 object\(s\)|not ready: .*not reconciled/);
    const metrics = await (await fetch(`${w.url}/metrics`)).text();
    expect(metrics).toMatch(/virt_reconcile_resources\{kind="image",state="in-sync",host="[^"]+"\} 1\n/);
    expect(metrics).toMatch(/virt_reconcile_resources\{kind="image",state="refused",host="[^"]+"\} 1\n/);
    expect(metrics).toMatch(/virt_reconcile_resources\{kind="image",state="failed",host="[^"]+"\} 1\n/);

    // Healing goes on for everything else: a deleted image comes back while one is refused.
    await rm(path.join(sb.dir, 'good.qcow2'));
    await until(async () => existsSync(path.join(sb.dir, 'good.qcow2')), 'the deleted image to come back');

    // Logged once however many retries, as JSON lines (stdout is not a terminal here).
    const lines = () =>
      w
        .log()
        .trim()
        .split('\n')
        .map((l) => JSON.parse(l) as { level: string; msg: string; time: string });
    expect(lines().every((l) => l.level && l.time && typeof l.msg === 'string')).toBe(true);
    expect(lines().filter((l) => /^reconcile (failing|now failing differently)/.test(l.msg))).toHaveLength(1);
    expect(lines().filter((l) => /images\.broken: FAILED/.test(l.msg))).toHaveLength(1);

    // Cleared: logged once, ready again.
    await rmdir(path.join(sb.dir, 'blocked.qcow2'));
    await rm(path.join(sb.dir, 'notadir'));
    await until(async () => (await fetch(`${w.url}/readyz`)).status === 200, 'ready again');
    expect(lines().filter((l) => /^reconcile recovered/.test(l.msg))).toHaveLength(1);
    const after = await w.status();
    expect(after.images.map((i: Entry) => i.status)).toEqual(['in-sync', 'in-sync', 'in-sync', 'in-sync']);
    w.proc.kill('SIGTERM');
    expect(await w.exit()).toBe(0);
  });

  it('when nothing can be observed, statuses are unknown (not the last ones seen) and the gauge does not count them as in sync', async () => {
    const sb = await sandbox('watch-unknown');
    boxes.push(sb);
    const conf = await sb.yaml('version: 1\nimages:\n  a: { path: $DIR/a.qcow2, size: 4M }\n');
    const w = await startWatch(sb, ['-f', conf, '--interval', '1s', '--log-format', 'text']);
    await until(async () => (await fetch(`${w.url}/readyz`)).status === 200, 'ready');
    // A rejected revision makes it not ready; the revision that fixes it makes it ready again.
    await sb.yaml('version: 1\nimages:\n  a: { path: $DIR/a.qcow2, size: banana }\n');
    await until(async () => (await w.status()).rejectedRevision && (await fetch(`${w.url}/readyz`)).status === 503, 'the rejected revision');
    await sb.yaml('version: 1\nimages:\n  a: { path: $DIR/a.qcow2, size: 4M, permissions: { mode: "0600" } }\n');
    await until(async () => !(await w.status()).rejectedRevision && (await fetch(`${w.url}/readyz`)).status === 200, 'ready after the fix');
    const inventory = path.join(sb.stateDir, 'inventory.json');
    const good = await readFile(inventory, 'utf8');
    await writeFile(inventory, '{ not json');
    const st = await until(async () => {
      const s = await w.status();
      return s.images[0]?.status === 'unknown' && s;
    }, 'the image status to become unknown');
    expect(st.images[0].detail).toMatch(/not observed: cannot read .*inventory\.json.*; last observed 20/);
    expect(st.ready).toBe(false);
    expect((await fetch(`${w.url}/readyz`)).status).toBe(503);
    const metrics = await (await fetch(`${w.url}/metrics`)).text();
    expect(metrics).not.toMatch(/state="in-sync",host="[^"]+"\} 1/);
    expect(metrics).toMatch(/virt_reconcile_resources\{kind="image",state="unknown",host="[^"]+"\} 1/);
    // Text logs on request; the failure once.
    expect(w.log().match(/ERROR reconcile failing/g)).toHaveLength(1);
    await writeFile(inventory, good);
    await until(async () => (await fetch(`${w.url}/readyz`)).status === 200, 'ready again');
    // HTTP: HEAD answers without a body; bodies are refused where none is taken, and bounded on the webhook.
    const head = await fetch(`${w.url}/readyz`, { method: 'HEAD' });
    expect(head.status).toBe(200);
    expect(await head.text()).toBe('');
    expect((await fetch(`${w.url}/status`, { method: 'POST', body: 'x' })).status).toBe(413);
    const big = await fetch(`${w.url}/hooks/git`, { method: 'POST', body: Buffer.alloc(2 * 1024 * 1024, 120) }).catch((e: Error) => e);
    expect(big instanceof Error ? 'connection closed' : String(big.status)).toMatch(/^(413|connection closed)$/);
    expect((await fetch(`${w.url}/healthz`)).status).toBe(200);
    w.proc.kill('SIGTERM');
    expect(await w.exit()).toBe(0);
  });
});
