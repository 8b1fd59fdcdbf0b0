// Maintenance windows end to end: outside a window, plan shows the disruptive changes as
// waiting and apply makes everything else; the watch service applies the rest at once and the
// waiting changes the moment the next window opens.
import { existsSync } from 'node:fs';
import path from 'node:path';
import { afterAll, afterEach, describe, expect, it } from 'vitest';
import { qemuInfo, sandbox, type Sandbox } from './helpers.js';
import { procs, startWatch, until } from './watch-helpers.js';

let sb: Sandbox;
afterEach(() => {
  for (const p of procs.splice(0)) if (p.exitCode === null) p.kill('SIGKILL');
});
afterAll(async () => sb?.cleanup());

const yaml = (windows: string, second: boolean) => `version: 1
${windows}
images:
  a: { path: $DIR/a.img, format: ${second ? 'raw' : 'qcow2'}, size: 8M }
${second ? '  b: { path: $DIR/b.qcow2, size: 8M }' : '  old: { path: $DIR/old.qcow2, size: 8M }'}
`;
const format = async (f: string) => (await qemuInfo(path.join(sb.dir, f))).format as string;

describe('maintenance windows', () => {
  it('outside a window: a replace and a prune wait (plan shows them, exit 2), the create is applied; in a window they are applied', async () => {
    sb = await sandbox('windows');
    await sb.yaml(yaml('', false));
    expect((await sb.run('apply')).code).toBe(0);
    // Opens on 1 January only: closed now (unless this runs in that minute).
    await sb.yaml(yaml('windows: [{ schedule: "0 0 1 1 *", duration: 1m, timezone: UTC }]', true));
    const plan = await sb.run('plan', '--allow-replace', '--prune', '--detailed-exitcode');
    expect(plan.code).toBe(2);
    expect(plan.stdout).toMatch(/Waiting for a maintenance window \(the next opens at \d{4}-01-01T00:00:00\.000Z\):/);
    expect(plan.stdout).toMatch(/images\.a\s+replace/);
    expect(plan.stdout).toMatch(/inventory:image:\S+old\.qcow2\s+delete/);
    expect(plan.stdout).toMatch(/Plan: 1 to create, 0 to update, 0 to replace, 0 to delete; 0 in sync; 2 waiting for a maintenance window\./);
    const json = JSON.parse((await sb.run('plan', '--allow-replace', '--prune', '-o', 'json')).stdout) as { waiting: { id: string }[] };
    expect(json.waiting.map((x) => x.id)).toEqual(expect.arrayContaining(['images.a', expect.stringMatching(/^inventory:image:.*old\.qcow2$/)]));
    expect(json.waiting).toHaveLength(2);
    expect(plan.stdout).toMatch(/images\.a\s+replace .*\[destructive\]/);
    const apply = await sb.run('apply', '--allow-replace', '--prune', '--auto-approve');
    expect(apply.code, apply.stderr).toBe(0);
    expect(apply.stdout).toMatch(/2 change\(s\) wait for a maintenance window/);
    const again = JSON.parse((await sb.run('apply', '--allow-replace', '--prune', '--auto-approve', '-o', 'json')).stdout) as { waiting: { id: string; destructive: boolean }[] };
    expect(again.waiting.map((w) => w.destructive)).toEqual([true, true]);
    expect(existsSync(path.join(sb.dir, 'b.qcow2'))).toBe(true);
    expect(await format('a.img')).toBe('qcow2');
    expect(existsSync(path.join(sb.dir, 'old.qcow2'))).toBe(true);

    // An invalid window is a validation error, positioned.
    await sb.yaml(yaml('windows: [{ schedule: "0 2 * *", duration: 4 hours, timezone: Mars/Olympus }, { schedule: "0 2 30 2 *", duration: 1h }]', true));
    const bad = await sb.run('validate');
    expect(bad.code).toBe(1);
    expect(bad.stderr).toMatch(/storage\.yaml:2:\d+: windows\[0\]\.schedule: must be a five-field cron expression/);
    expect(bad.stderr).toMatch(/windows\[0\]\.timezone: unknown time zone "Mars\/Olympus"/);
    expect(bad.stderr).toMatch(/windows\[0\]\.duration: /);
    expect(bad.stderr).toMatch(/windows\[1\]\.schedule: never fires/);

    // --outside-window: the replace now, whatever the windows say.
    await sb.yaml(yaml('windows: [{ schedule: "0 0 1 1 *", duration: 1m, timezone: UTC }]', true));
    const now = await sb.run('apply', '--allow-replace', '--outside-window', '--auto-approve');
    expect(now.code, now.stderr).toBe(0);
    expect(await format('a.img')).toBe('raw');
    expect(existsSync(path.join(sb.dir, 'old.qcow2'))).toBe(true);
    // Always open: the waiting prune is made.
    await sb.yaml(yaml('windows: [{ schedule: "* * * * *", duration: 2m }]', true));
    const open = await sb.run('apply', '--allow-replace', '--prune', '--auto-approve');
    expect(open.code, open.stderr).toBe(0);
    expect(existsSync(path.join(sb.dir, 'old.qcow2'))).toBe(false);
  });

  it('watch applies the rest at once, shows the waiting changes in /status and /metrics, and makes them when the window opens', { timeout: 150_000 }, async () => {
    const box = await sandbox('windows-watch');
    const conf = await box.yaml(yaml('', false));
    expect((await box.run('apply')).code).toBe(0);
    // A window opening at the start of the next minute (UTC), for two minutes.
    if (new Date().getUTCSeconds() > 45) await new Promise((r) => setTimeout(r, (61 - new Date().getUTCSeconds()) * 1000));
    const minute = (new Date().getUTCMinutes() + 1) % 60;
    await box.yaml(yaml(`windows: [{ schedule: "${minute} * * * *", duration: 2m, timezone: UTC }]`, true));
    const w = await startWatch(box, ['-f', conf, '--interval', '5m', '--allow-replace', '--prune']);
    const st = await until(async () => {
      const s = await w.status();
      return s.waiting?.length === 2 && s;
    }, 'the disruptive changes to wait');
    expect(st.waiting.map((x: { id: string }) => x.id)).toContain('images.a');
    expect(st.images.find((i: { name: string }) => i.name === 'a')).toMatchObject({ status: 'waiting' });
    expect(existsSync(path.join(box.dir, 'b.qcow2'))).toBe(true);
    expect(await (await fetch(`${w.url}/metrics`)).text()).toMatch(/^virt_reconcile_waiting_actions\{host="[^"]+"\} 2$/m);
    await until(async () => (await w.status()).waiting?.length === 0, 'the window to open and the waiting changes to be made', 75_000);
    expect((await qemuInfo(path.join(box.dir, 'a.img'))).format).toBe('raw');
    expect(existsSync(path.join(box.dir, 'old.qcow2'))).toBe(false);
    expect(w.log()).toMatch(/maintenance window opened/);
    w.proc.kill('SIGTERM');
    expect(await w.exit()).toBe(0);
    await box.cleanup();
  });
});
