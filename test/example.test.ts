// examples/storage.yaml is real: it validates, applies (into a scratch directory), and is idempotent.
import { readFile } from 'node:fs/promises';
import path from 'node:path';
import { afterAll, expect, it } from 'vitest';
import { qemuInfo, ROOT, sandbox, type Sandbox } from './helpers.js';

let sb: Sandbox;
afterAll(() => sb?.cleanup());

it('the example applies and a second apply changes nothing', async () => {
  sb = await sandbox('example');
  const text = await readFile(path.join(ROOT, 'examples', 'storage.yaml'), 'utf8');
  await sb.yaml(text.replaceAll('/var/lib/libvirt/images/example', '$DIR'));
  const first = await sb.run('apply');
  expect(first.code).toBe(0);
  expect(first.stdout).toMatch(/Apply complete: 6 created, 0 updated, 0 replaced, 0 deleted\./);
  expect((await qemuInfo(path.join(sb.dir, 'webapp-root.qcow2')))['backing-filename']).toBe(path.join(sb.dir, 'fedora-base.qcow2'));
  expect((await qemuInfo(path.join(sb.dir, 'export/fedora-azure.vhd'), 'vpc'))['virtual-size']).toBe(2 * 1024 ** 3);
  const second = await sb.run('plan', '--detailed-exitcode');
  expect(second.code).toBe(0);
});
