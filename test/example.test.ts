// examples/storage.yaml is real: it validates, applies (into a scratch directory and a
// private libvirtd), a second apply changes nothing, and destroy removes all of it.
import { existsSync } from 'node:fs';
import { readFile } from 'node:fs/promises';
import path from 'node:path';
import { afterAll, expect, it } from 'vitest';
import { startPrivateLibvirtd, type PrivateLibvirtd } from '../src/dev/private-libvirtd.js';
import { qemuInfo, ROOT, sandbox, virsh, type Sandbox } from './helpers.js';

let sb: Sandbox;
let lv: PrivateLibvirtd;
afterAll(async () => {
  await lv?.stop();
  await sb?.cleanup();
});

it('the example applies, a second apply changes nothing, and destroy removes it', async () => {
  lv = await startPrivateLibvirtd();
  sb = await sandbox('example', { libvirt: lv });
  const text = await readFile(path.join(ROOT, 'examples', 'storage.yaml'), 'utf8');
  await import('node:fs/promises').then((fs) => fs.chmod(sb.dir, 0o755));
  await sb.yaml(text.replaceAll('/var/lib/libvirt/images/vr-demo', '$DIR/vr-demo').replace(/^connection: .*$/m, ''));
  const first = await sb.run('apply');
  expect(first.stderr).toBe('');
  expect(first.stdout).toMatch(/Apply complete: 10 created, 0 updated, 0 replaced, 0 deleted\./);
  expect((await qemuInfo(path.join(sb.dir, 'vr-demo/vr-demo-web-root.qcow2')))['backing-filename']).toBe(path.join(sb.dir, 'vr-demo/fedora-base.qcow2'));
  expect((await qemuInfo(path.join(sb.dir, 'vr-demo/export/fedora-azure.vhd'), 'vpc'))['virtual-size']).toBe(2 * 1024 ** 3);
  expect(await virsh(lv, 'vol-list', 'vr-demo-pool')).toMatch(/scratch\.qcow2[\s\S]*vr-demo-web-data\.img|vr-demo-web-data\.img[\s\S]*scratch\.qcow2/);
  const domain = await virsh(lv, 'dumpxml', '--inactive', 'vr-demo-web');
  expect(domain).toMatch(/<source pool='vr-demo-pool' volume='vr-demo-web-data\.img'\/>/);
  expect(domain).toMatch(/cache='writeback' io='threads'/);
  const second = await sb.run('plan', '--detailed-exitcode');
  expect(second.code).toBe(0);

  const destroyed = await sb.run('destroy');
  expect(destroyed.code, destroyed.stdout + destroyed.stderr).toBe(0);
  expect(destroyed.stdout).toMatch(/Destroy complete: 0 created, 0 updated, 0 replaced, 10 deleted\./);
  expect(await virsh(lv, 'list', '--all', '--name')).not.toMatch(/vr-demo/);
  expect(await virsh(lv, 'pool-list', '--all', '--name')).not.toMatch(/vr-demo/);
  expect(existsSync(path.join(sb.dir, 'vr-demo-pool'))).toBe(false);
  // and the directories it made for them
  expect(existsSync(path.join(sb.dir, 'vr-demo'))).toBe(false);
  expect((await sb.run('destroy')).stdout).toMatch(/^No changes\./m);
});
