// Between plan and action, the host can change: a file swapped for a symlink or another
// file, a same file spelled through a symlinked directory, a kill between publishing a vmdk's
// extents and its descriptor. Each action acts only on the very file the plan saw.
import { existsSync } from 'node:fs';
import { mkdir, readdir, readFile, rename, stat, symlink, writeFile } from 'node:fs/promises';
import path from 'node:path';
import { execa } from 'execa';
import { describe, expect, it } from 'vitest';
import { CLI, cli, qemuImg, sandboxes, waitForSpawn } from './helpers.js';

const box = sandboxes();

describe('files swapped between plan and action', () => {
  it('an update never resizes or chmods a symlink swapped in, and prune never deletes a file put in its place', async () => {
    const sb = await box('swap');
    const victim = path.join(sb.dir, 'victim.txt');
    await writeFile(victim, 'precious\n');
    await execa('sh', ['-c', `head -c 256M /dev/urandom > '${path.join(sb.dir, 'src.raw')}'`]);
    await sb.yaml('version: 1\nimages:\n  p: { path: $DIR/p.img, format: raw, size: 1M }\n  old: { path: $DIR/old.img, format: raw, size: 1M }\n');
    expect((await sb.run('apply')).code).toBe(0);
    // A slow build runs first (parallelism 1); the update and the prune come after it.
    await sb.yaml(`version: 1
images:
  a-big: { path: $DIR/big.qcow2, source: { file: $DIR/src.raw }, qcow2: { compressed: true } }
  p: { path: $DIR/p.img, format: raw, size: 2M, permissions: { mode: "0666" } }
`);
    const apply = sb.start('apply', '--prune', '--parallelism', '1');
    await waitForSpawn(sb, 'convert');
    await symlink(victim, path.join(sb.dir, 'p.new'));
    await rename(path.join(sb.dir, 'p.new'), path.join(sb.dir, 'p.img'));
    await writeFile(path.join(sb.dir, 'u.tmp'), 'USER PRECIOUS\n');
    await rename(path.join(sb.dir, 'u.tmp'), path.join(sb.dir, 'old.img'));
    const code = await apply.exited;
    const out = apply.stdout();
    expect(code, out).toBe(1);
    expect(out).toMatch(/images\.p: FAILED: .*p\.img is now a symlink; not followed, nothing changed/);
    expect(out).toMatch(/kept .*old\.img: not the file reconcile made/);
    expect(await readFile(victim, 'utf8')).toBe('precious\n');
    expect((await stat(victim)).mode & 0o777).toBe(0o644);
    expect(await readFile(path.join(sb.dir, 'old.img'), 'utf8')).toBe('USER PRECIOUS\n');
  });

  it('a declared image spelled through a symlinked directory is the same file: not pruned, still ours', async () => {
    const sb = await box('alias-prune');
    await mkdir(path.join(sb.dir, 'real'));
    await symlink(path.join(sb.dir, 'real'), path.join(sb.dir, 'link'));
    await sb.yaml('version: 1\nimages:\n  x: { path: $DIR/real/x.qcow2, size: 8M }\n');
    expect((await sb.run('apply')).code).toBe(0);
    await sb.yaml('version: 1\nimages:\n  x: { path: $DIR/link/x.qcow2, size: 8M }\n');
    const r = await sb.run('apply', '--prune');
    expect(r.code, r.stdout + r.stderr).toBe(0);
    expect(r.stdout).toMatch(/is declared as images\.x under another path; not pruned/);
    expect(existsSync(path.join(sb.dir, 'real', 'x.qcow2'))).toBe(true);
    const show = JSON.parse((await sb.run('show', '-o', 'json')).stdout) as { images: { owner: string; status: string }[] };
    expect(show.images[0]).toMatchObject({ owner: 'created', status: 'in-sync' });
  });
});

describe('interrupted publishing and unobservable sources', () => {
  it('kill -9 after a vmdk extent is published but before its descriptor: the next apply removes the extent and builds', async () => {
    const sb = await box('vmdk-kill');
    await mkdir(path.join(sb.dir, 'v'));
    await sb.yaml('version: 1\nimages:\n  v: { path: $DIR/v/v.vmdk, format: vmdk, size: 64M, vmdk: { subformat: monolithicFlat } }\n');
    const crashed = await execa('node', [CLI, 'apply', '-f', path.join(sb.dir, 'storage.yaml'), '--state-dir', sb.stateDir], {
      reject: false,
      env: { VIRT_RECONCILE_FAILPOINT: 'image-extents-published' },
    });
    expect(crashed.signal).toBe('SIGKILL');
    expect(await readdir(path.join(sb.dir, 'v'))).toContain('v-flat.vmdk');
    expect(existsSync(path.join(sb.dir, 'v', 'v.vmdk'))).toBe(false);
    const r = await sb.run('apply');
    expect(r.code, r.stdout + r.stderr).toBe(0);
    expect((await readdir(path.join(sb.dir, 'v'))).filter((n) => !n.startsWith('.')).sort()).toEqual(['v-flat.vmdk', 'v.vmdk']);
    expect((await sb.run('plan', '--detailed-exitcode')).code).toBe(0);
  });

  it('an image whose source cannot be observed is refused, not silently skipped', async () => {
    const sb = await box('src-dir');
    await mkdir(path.join(sb.dir, 'srcdir'));
    await sb.yaml('version: 1\nimages:\n  n: { path: $DIR/n.qcow2, source: { file: $DIR/srcdir } }\n');
    const r = await sb.run('plan', '--detailed-exitcode');
    expect(r.code).toBe(1);
    expect(r.stdout).toMatch(/images\.n: .*source .*srcdir exists but is not a regular file or block device/);
  });

  it('a pool path through a symlink into a system directory is refused; bidi controls are escaped', async () => {
    const sb = await box('pool-link');
    await symlink('/usr', path.join(sb.dir, 'usrlink'));
    await sb.yaml('version: 1\npools:\n  p: { type: dir, path: $DIR/usrlink/share }\nimages:\n  "a": { path: "$DIR/a\\u202e.qcow2", size: 1M }\n');
    const r = await cli(['validate', '-f', path.join(sb.dir, 'storage.yaml')]);
    expect(r.code).toBe(1);
    expect(r.stderr).toMatch(/pools\.p\.path: .*usrlink\/share resolves to \/usr\/share, which is refused: \/usr is a system directory/);
    await sb.yaml('version: 1\nimages:\n  a: { path: "$DIR/a\\u202e.qcow2", size: 1M }\n');
    const plan = await sb.run('plan');
    expect(plan.stdout).toContain('a\\u202e.qcow2');
    expect(plan.stdout).not.toContain('\u202e');
    await qemuImg('--version');
  });
});

describe('second adversarial pass', () => {
  it('a replace of a multi-file vmdk killed after its extents were renamed in is rebuilt, not reported in sync', async () => {
    const sb = await box('vmdk-replace-kill');
    await mkdir(path.join(sb.dir, 'd'));
    const yaml = (adapter: string) => `version: 1\nimages:\n  d: { path: $DIR/d/d.vmdk, format: vmdk, size: 16M, vmdk: { subformat: monolithicFlat, adapterType: ${adapter} } }\n`;
    await sb.yaml(yaml('lsilogic'));
    expect((await sb.run('apply')).code).toBe(0);
    await sb.yaml(yaml('ide'));
    const crashed = await execa('node', [CLI, 'apply', '--allow-replace', '-f', path.join(sb.dir, 'storage.yaml'), '--state-dir', sb.stateDir], {
      reject: false,
      env: { VIRT_RECONCILE_FAILPOINT: 'image-extents-published' },
    });
    expect(crashed.signal).toBe('SIGKILL');
    // Back to the old declaration: the image is broken now, and plan must say so.
    await sb.yaml(yaml('lsilogic'));
    const plan = await sb.run('plan', '--detailed-exitcode');
    expect(plan.code, plan.stdout).toBe(2);
    expect(plan.stdout).toMatch(/images\.d +replace +state incomplete \(a replace was interrupted while publishing\) -> complete/);
    const r = await sb.run('apply');
    expect(r.code, r.stdout + r.stderr).toBe(0);
    expect((await sb.run('plan', '--detailed-exitcode')).code).toBe(0);
    await expect(qemuImg('check', path.join(sb.dir, 'd', 'd.vmdk'))).resolves.toMatch(/No errors/);
  });

  it('prune never deletes the target of a declared adopt + followSymlink image', async () => {
    const sb = await box('follow-prune');
    await sb.yaml('version: 1\nimages:\n  r: { path: $DIR/real.qcow2, size: 8M }\n');
    expect((await sb.run('apply')).code).toBe(0);
    await symlink(path.join(sb.dir, 'real.qcow2'), path.join(sb.dir, 'link.qcow2'));
    await sb.yaml('version: 1\nimages:\n  l: { path: $DIR/link.qcow2, size: 8M, adopt: true, followSymlink: true }\n');
    const r = await sb.run('apply', '--prune');
    expect(r.code, r.stdout + r.stderr).toBe(0);
    expect(existsSync(path.join(sb.dir, 'real.qcow2'))).toBe(true);
  });
});
