// Drift healed as it happens: with a 5-minute interval, what someone deletes or changes is put
// back within seconds, because the watch service follows libvirt's events and the files of the
// declared images (a private libvirtd; the service runs in its namespace).
import { chmod, rm } from 'node:fs/promises';
import path from 'node:path';
import { execa } from 'execa';
import { afterAll, afterEach, describe, expect, it } from 'vitest';
import { startPrivateLibvirtd, type PrivateLibvirtd } from '../src/dev/private-libvirtd.js';
import { sandbox, type Sandbox } from './helpers.js';
import { procs, startWatch, until } from './watch-helpers.js';
import { parseEventLine } from '../src/tools/libvirt-events.js';

let lv: PrivateLibvirtd | undefined;
let sb: Sandbox | undefined;
afterEach(() => {
  for (const p of procs.splice(0)) if (p.exitCode === null) p.kill('SIGKILL');
});
afterAll(async () => {
  await lv?.stop();
  await sb?.cleanup();
});

describe('libvirt event lines', () => {
  it('are read with or without a timestamp; pools are named without quotes', () => {
    expect(parseEventLine("event 'lifecycle' for domain 'web-1': Undefined Removed")).toEqual({ kind: 'domain', name: 'web-1', event: 'lifecycle', detail: 'Undefined Removed' });
    expect(parseEventLine("2026-11-27 23:40:05.180+0000: event 'lifecycle' for storage pool data: Stopped")).toEqual({
      kind: 'pool',
      name: 'data',
      event: 'lifecycle',
      detail: 'Stopped',
    });
    expect(parseEventLine("event 'device-removed' for domain 'db': virtio-disk1")).toMatchObject({ kind: 'domain', name: 'db', event: 'device-removed' });
    expect(parseEventLine('events received: 3')).toBeUndefined();
  });
});

describe('drift healed within seconds (interval 5m)', () => {
  it('a deleted volume (through libvirt or not), a deleted image file, an undefined domain and a stopped pool are each back in under 5 s', { timeout: 180_000 }, async () => {
    lv = await startPrivateLibvirtd();
    sb = await sandbox('drift-events', { libvirt: lv });
    await chmod(sb.dir, 0o755);
    const conf = await sb.yaml(`version: 1
pools:
  ep: { type: dir, path: $DIR/pool }
images:
  vol: { pool: ep, size: 8M }
  file: { path: $DIR/img/file.qcow2, size: 8M }
vms:
  ev: { create: { memory: 64M, vcpus: 1 }, disks: [{ image: vol, cache: none }] }
`);
    const w = await startWatch(sb, ['-f', conf, '--interval', '5m', '--connect', lv.uri], lv.nsenter);
    await until(async () => (await fetch(`${w.url}/readyz`)).status === 200, 'ready');
    const v = (...a: string[]) => execa('virsh', ['-q', '-c', lv!.uri, ...a]).then((r) => String(r.stdout));
    const isImage = (f: string) =>
      execa('qemu-img', ['info', f]).then(
        () => true,
        () => false,
      );
    const healed = async (what: string, check: () => Promise<boolean>) => {
      const t0 = Date.now();
      await until(async () => (await check()) || undefined, what, 5_000);
      return Date.now() - t0;
    };

    await v('vol-delete', '--pool', 'ep', 'vol.qcow2');
    expect(await healed('the deleted volume to come back', async () => (await v('vol-list', 'ep')).includes('vol.qcow2'))).toBeLessThan(5_000);

    // Removed behind libvirt's back (libvirt still lists it until the pool is read again).
    await rm(path.join(sb.dir, 'pool', 'vol.qcow2'));
    expect(await healed('the volume whose file was removed to come back', () => isImage(path.join(sb!.dir, 'pool', 'vol.qcow2')))).toBeLessThan(5_000);

    await rm(path.join(sb.dir, 'img', 'file.qcow2'));
    expect(await healed('the deleted image file to come back', () => isImage(path.join(sb!.dir, 'img', 'file.qcow2')))).toBeLessThan(5_000);

    await v('undefine', 'ev');
    expect(await healed('the undefined domain to be defined again', async () => (await v('list', '--all', '--name')).includes('ev'))).toBeLessThan(5_000);

    await v('pool-destroy', 'ep');
    expect(await healed('the stopped pool to be started again', async () => /^\s*ep\s+active/m.test(await v('pool-list', '--all')))).toBeLessThan(5_000);

    expect(w.log()).toMatch(/libvirt event: domain ev lifecycle/);
    expect(w.log()).toMatch(/drift: \S+file\.qcow2 was deleted/);
    // Nothing loops: once healed (and the events of its own repair seen), the service is quiet until the interval.
    await new Promise((r) => setTimeout(r, 1_500));
    const before = (w.log().match(/reconciled /g) ?? []).length;
    await new Promise((r) => setTimeout(r, 3_000));
    expect((w.log().match(/reconciled /g) ?? []).length).toBe(before);
    w.proc.kill('SIGTERM');
    expect(await w.exit()).toBe(0);
  });
});
