// What apply says when it does not apply: -o json always prints a JSON value on stdout, a
// failed action is repeated in the closing summary, and a refused apply leaves no state
// directory behind.
import { mkdir, writeFile } from 'node:fs/promises';
import { existsSync } from 'node:fs';
import path from 'node:path';
import { afterAll, describe, expect, it } from 'vitest';
import { qemuImg, sandbox, type Sandbox } from './helpers.js';

const boxes: Sandbox[] = [];
afterAll(async () => {
  for (const b of boxes) await b.cleanup();
});

describe('apply output when nothing or not everything is applied', () => {
  it('a refusal: a JSON error object with the refusals, exit 1, and no state directory left behind', async () => {
    const sb = await sandbox('json-refused');
    boxes.push(sb);
    await qemuImg('create', '-q', '-f', 'qcow2', path.join(sb.dir, 'big.qcow2'), '16M');
    await sb.yaml('version: 1\nimages:\n  big: { path: $DIR/big.qcow2, size: 8M, adopt: true }\n');
    const r = await sb.run('apply', '-o', 'json');
    expect(r.code).toBe(1);
    const out = JSON.parse(r.stdout) as { ok: boolean; error: string; reason: string; refusals: { id: string; message: string }[] };
    expect(out).toMatchObject({ ok: false, reason: 'refused' });
    expect(out.refusals[0]).toMatchObject({ id: 'images.big' });
    expect(out.refusals[0]!.message).toMatch(/shrink/);
    expect(existsSync(sb.stateDir)).toBe(false);
  });

  it('a held lock: a JSON error object naming the holder', async () => {
    const sb = await sandbox('json-locked');
    boxes.push(sb);
    await sb.yaml('version: 1\nimages:\n  a: { path: $DIR/a.qcow2, size: 1M }\n');
    await mkdir(path.join(sb.stateDir, 'apply.lock'), { recursive: true });
    const holder = {
      pid: process.pid,
      host: (await import('node:os')).hostname(),
      boot: (await import('node:fs')).readFileSync('/proc/sys/kernel/random/boot_id', 'utf8').trim(),
      command: 'apply',
      since: new Date().toISOString(),
    };
    await writeFile(path.join(sb.stateDir, 'apply.lock', 'holder.json'), JSON.stringify(holder));
    const r = await sb.run('apply', '-o', 'json', '--lock-timeout', '0');
    expect(r.code).toBe(1);
    expect(JSON.parse(r.stdout)).toMatchObject({ ok: false, reason: 'locked', holder: { pid: process.pid } });
    expect(r.stderr).toMatch(/is locked by pid \d+/);
  });

  it('a failed action is repeated in the final summary, with what it held back', async () => {
    const sb = await sandbox('failed-summary');
    boxes.push(sb);
    await writeFile(path.join(sb.dir, 'notadir'), 'x');
    await sb.yaml(`version: 1
images:
  ok: { path: $DIR/ok.qcow2, size: 1M }
  broken: { path: $DIR/notadir/broken.qcow2, size: 1M }
  top: { path: $DIR/top.qcow2, source: { backing: broken } }
`);
    const r = await sb.run('apply');
    expect(r.code).toBe(1);
    const summary = r.stdout.slice(r.stdout.indexOf('Apply failed'));
    expect(summary).toMatch(/^Apply failed: 2 action\(s\) did not complete; 1 created/);
    expect(summary).toMatch(/\n {2}images\.broken: FAILED: .*notadir/);
    expect(summary).toMatch(/\n {2}images\.top: skipped \(images\.broken did not complete\)/);
    const j = await sb.run('apply', '-o', 'json');
    expect(JSON.parse(j.stdout)).toMatchObject({ ok: false, reason: 'failed', counts: { failed: 2 } });
    expect(summary).toMatch(/images\.broken: FAILED: cannot make directory .*notadir: .*notadir is a file, not a directory/);
  });
});
