// `reconcile destroy` removes exactly what reconcile created for the files — never an adopted
// image or a file it did not make — asks first on a terminal, and has nothing left to do after.
import { createHash } from 'node:crypto';
import { existsSync } from 'node:fs';
import { readFile, symlink, writeFile } from 'node:fs/promises';
import path from 'node:path';
import { beforeAll, describe, expect, it } from 'vitest';
import { qemuImg, qemuInfo, sandboxes, type Sandbox } from './helpers.js';

const box = sandboxes();
let sb: Sandbox;
const p = (f: string) => path.join(sb.dir, f);
const sha = async (f: string) =>
  createHash('sha256')
    .update(await readFile(f))
    .digest('hex');

// The example's kinds of image files, small: a tuned protected base, an overlay on it, a raw
// disk, and vhd/vmdk/vhdx exports of the base.
const CREATED = ['demo/base.qcow2', 'demo/web-root.qcow2', 'demo/data.raw', 'demo/export/base.vhd', 'demo/export/base.vmdk', 'demo/export/base.vhdx'];

beforeAll(async () => {
  sb = await box('destroy');
  await import('node:fs/promises').then((fs) => fs.mkdir(p('demo')));
  await qemuImg('create', '-q', '-f', 'qcow2', p('demo/adopted.qcow2'), '4M');
  await writeFile(p('demo/notes.txt'), "not reconcile's\n");
  await sb.yaml(`version: 1
images:
  base:
    path: $DIR/demo/base.qcow2
    size: 16M
    qcow2: { clusterSize: 128K, compression: zstd, preallocation: metadata, lazyRefcounts: true }
    protect: true
  web-root: { path: $DIR/demo/web-root.qcow2, size: 32M, source: { backing: base } }
  data: { path: $DIR/demo/data.raw, format: raw, size: 8m }
  azure: { path: $DIR/demo/export/base.vhd, format: vhd, vhd: { subformat: fixed }, source: { image: base } }
  vmware: { path: $DIR/demo/export/base.vmdk, format: vmdk, vmdk: { subformat: streamOptimized }, source: { image: base } }
  hyperv: { path: $DIR/demo/export/base.vhdx, format: vhdx, size: 32M, source: { image: base } }
  adopted: { path: $DIR/demo/adopted.qcow2, adopt: true, permissions: { mode: "0640" } }
`);
  const r = await sb.run('apply');
  if (r.code !== 0) throw new Error(`apply failed:\n${r.stdout}\n${r.stderr}`);
});

describe('destroy', () => {
  it('on a terminal, shows the plan and deletes nothing unless the answer is "yes"', async () => {
    const r = await sb.runInTerminal('y\n', 'destroy', '-f', await sb.yaml((await readFile(p('storage.yaml'), 'utf8')).replace('    protect: true\n', ''), 'unprotected.yaml'));
    expect(r.code, r.stdout).toBe(1);
    // biome-ignore lint/suspicious/noControlCharactersInRegex: removing terminal color codes
    expect(r.stdout.replace(/\u001b\[\d+m/g, '')).toMatch(/- inventory:.*\/demo\/base\.qcow2 +delete/);
    expect(r.stdout).toContain('Apply these changes? Only "yes" is accepted:');
    expect(r.stdout).toMatch(/destroy cancelled \(the answer was not "yes"\); nothing was changed/);
    for (const f of CREATED) expect(existsSync(p(f)), f).toBe(true);
  });

  it('never destroys an image the YAML declares with protect: true (the whole destroy is refused)', async () => {
    const r = await sb.run('destroy');
    expect(r.code).toBe(1);
    expect(r.stderr).toMatch(/images\.base: .*images\.base has protect: true, so destroy never deletes it/);
    expect(r.stderr).toMatch(/nothing was applied/);
    for (const f of CREATED) expect(existsSync(p(f)), f).toBe(true);
    // The same file declared through another spelling of its path (a symlinked directory) is protected too.
    await symlink(p('demo'), p('demo-link'));
    const aliased = await sb.yaml('version: 1\nimages:\n  base: { path: $DIR/demo-link/base.qcow2, size: 16M, protect: true }\n', 'aliased.yaml');
    const viaLink = await sb.run('destroy', '-f', aliased);
    expect(viaLink.code).toBe(1);
    expect(viaLink.stderr).toMatch(/images\.base has protect: true, so destroy never deletes it \(inventory:image:.*\/demo\/base\.qcow2\)/);
    for (const f of CREATED) expect(existsSync(p(f)), f).toBe(true);
    // Taking protect: true out of the YAML is the consent.
    await writeFile(p('storage.yaml'), (await readFile(p('storage.yaml'), 'utf8')).replace('    protect: true\n', ''));
  });

  it('deletes exactly the images reconcile created; the adopted image and a file it did not create stay as they were', async () => {
    const adopted = { info: await qemuInfo(p('demo/adopted.qcow2')), sha: await sha(p('demo/adopted.qcow2')) };
    const r = await sb.run('destroy');
    expect(r.code, r.stdout + r.stderr).toBe(0);
    expect(r.stdout.match(/^ +- inventory:\S+ +delete /gm)).toHaveLength(CREATED.length);
    expect(r.stdout).toContain(`Destroy complete: 0 created, 0 updated, 0 replaced, ${CREATED.length} deleted.`);
    for (const f of CREATED) expect(existsSync(p(f)), f).toBe(false);
    expect(await qemuInfo(p('demo/adopted.qcow2'))).toEqual(adopted.info);
    expect(await sha(p('demo/adopted.qcow2'))).toBe(adopted.sha);
    expect(await readFile(p('demo/notes.txt'), 'utf8')).toBe("not reconcile's\n");
  });

  it('a second destroy has nothing to do', async () => {
    const r = await sb.run('destroy');
    expect(r.code, r.stderr).toBe(0);
    expect(r.stdout).toMatch(/^No changes\./m);
    expect(existsSync(p('demo/adopted.qcow2'))).toBe(true);
    // and apply builds it all again: destroy forgot what it deleted
    const again = await sb.run('plan', '-o', 'json');
    expect((JSON.parse(again.stdout) as { actions: { kind: string }[] }).actions.filter((a) => a.kind === 'create')).toHaveLength(CREATED.length);
  });
});
