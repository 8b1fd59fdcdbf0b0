// Never touch what is not ours: an existing file is managed only when the YAML adopts it, a
// symlink is not followed, a build never replaces a file that appeared meanwhile, prune
// deletes only the extents it made, and leftover cleanup removes only its own directories.
import { existsSync } from 'node:fs';
import { chmod, mkdir, readdir, readFile, stat, symlink, writeFile } from 'node:fs/promises';
import path from 'node:path';
import { execa } from 'execa';
import { describe, expect, it } from 'vitest';
import { CLI, qemuImg, sandboxes, waitForSpawn } from './helpers.js';

const box = sandboxes();
const mode = async (f: string) => (await stat(f)).mode & 0o777;

describe('files reconcile did not make', () => {
  it('an existing file is reported and left alone unless adopted, even with --allow-replace', async () => {
    const sb = await box('foreign');
    const f = path.join(sb.dir, 'notes.img');
    await writeFile(f, 'my notes\n');
    await chmod(f, 0o640);
    await sb.yaml(`version: 1
images:
  notes: { path: $DIR/notes.img, format: raw, size: 1M, permissions: { mode: "0644" } }
`);
    const plan = await sb.run('plan');
    expect(plan.code).toBe(1);
    expect(plan.stdout).toMatch(/notes\.img exists and reconcile did not create it, so it is left alone\. To manage it, add adopt: true to images\.notes/);
    for (const flags of [[], ['--allow-replace']]) {
      const r = await sb.run('apply', ...flags);
      expect(r.code).toBe(1);
    }
    expect(await readFile(f, 'utf8')).toBe('my notes\n');
    expect(await mode(f)).toBe(0o640);
  });

  it('an adopted image is changed only in what its own declaration sets, never by defaults', async () => {
    const sb = await box('adopt');
    const f = path.join(sb.dir, 'old.img');
    await qemuImg('create', '-q', '-f', 'raw', f, '8M');
    await chmod(f, 0o640);
    await sb.yaml(`version: 1
defaults:
  image: { permissions: { mode: "0600" }, format: qcow2 }
images:
  old: { path: $DIR/old.img, adopt: true }
`);
    const r = await sb.run('plan', '--detailed-exitcode');
    expect(r.code, r.stdout).toBe(0);
    expect(r.stdout).toMatch(/adopted .*old\.img keeps its format raw \(set on images\.old itself to change it\)/);
    // Declared on the object itself: now it is the YAML's to change.
    await sb.yaml(`version: 1
images:
  old: { path: $DIR/old.img, adopt: true, format: raw, size: 16M, permissions: { mode: "0644" } }
`);
    expect((await sb.run('apply')).code).toBe(0);
    expect(await mode(f)).toBe(0o644);
    expect((await stat(f)).size).toBe(16 * 1024 * 1024);
    // Adopted is never pruned.
    await sb.yaml('version: 1\n');
    expect((await sb.run('apply', '--prune')).code).toBe(0);
    expect(existsSync(f)).toBe(true);
  });

  it('a symlink at an image path is refused unless declared; its target is untouched', async () => {
    const sb = await box('symlink');
    const victim = path.join(sb.dir, 'victim.txt');
    await writeFile(victim, 'precious\n');
    await chmod(victim, 0o600);
    await symlink(victim, path.join(sb.dir, 'link.img'));
    await sb.yaml(`version: 1
images:
  l: { path: $DIR/link.img, format: raw, size: 64K, adopt: true, permissions: { mode: "0666" } }
`);
    const r = await sb.run('apply', '--allow-replace');
    expect(r.code).toBe(1);
    expect(r.stdout + r.stderr).toMatch(/link\.img is a symlink to .*victim\.txt; reconcile does not follow links at image paths/);
    expect(await readFile(victim, 'utf8')).toBe('precious\n');
    expect(await mode(victim)).toBe(0o600);
  });

  it('images are created private (0600) unless a mode is declared', async () => {
    const sb = await box('mode');
    await sb.yaml(`version: 1
images:
  a: { path: $DIR/a.qcow2, size: 1M }
  b: { path: $DIR/b.qcow2, size: 1M, permissions: { mode: "0640" } }
`);
    expect((await sb.run('apply')).code).toBe(0);
    expect(await mode(path.join(sb.dir, 'a.qcow2'))).toBe(0o600);
    expect(await mode(path.join(sb.dir, 'b.qcow2'))).toBe(0o640);
  });
});

describe('publishing a build', () => {
  it('never replaces a file that appeared at the path during the build', async () => {
    const sb = await box('appeared');
    await execa('sh', ['-c', `head -c 256M /dev/urandom > '${path.join(sb.dir, 'src.raw')}'`]);
    await sb.yaml(`version: 1
images:
  big: { path: $DIR/big.qcow2, source: { file: $DIR/src.raw }, qcow2: { compressed: true } }
`);
    const apply = sb.start('apply');
    await waitForSpawn(sb, 'convert');
    await writeFile(path.join(sb.dir, 'big.qcow2'), 'written by someone else meanwhile\n');
    expect(await apply.exited).toBe(1);
    expect(apply.stdout()).toMatch(/big\.qcow2 appeared while the image was being built \(someone else's file\); it is left as it is/);
    expect(await readFile(path.join(sb.dir, 'big.qcow2'), 'utf8')).toBe('written by someone else meanwhile\n');
    expect((await readdir(sb.dir)).filter((n) => n.includes('.reconcile-'))).toEqual([]);
  });

  it('two applies with different state directories: one creates the image, the other does not replace it', async () => {
    const sb = await box('two-states');
    await execa('sh', ['-c', `head -c 128M /dev/urandom > '${path.join(sb.dir, 'src.raw')}'`]);
    await sb.yaml(`version: 1
images:
  img: { path: $DIR/img.qcow2, source: { file: $DIR/src.raw }, qcow2: { compressed: true } }
`);
    const run = (state: string) => execa('node', [CLI, 'apply', '-f', path.join(sb.dir, 'storage.yaml'), '--state-dir', path.join(sb.dir, state)], { reject: false });
    const [a, b] = await Promise.all([run('s1'), run('s2')]);
    expect([a.exitCode, b.exitCode].sort()).toEqual([0, 1]);
    expect(a.stdout + b.stdout).toMatch(/img\.qcow2 appeared while the image was being built/);
    await expect(qemuImg('compare', '-F', 'raw', path.join(sb.dir, 'img.qcow2'), path.join(sb.dir, 'src.raw'))).resolves.toMatch(/identical/);
    const winner = a.exitCode === 0 ? 's1' : 's2';
    const inv = JSON.parse(await readFile(path.join(sb.dir, winner, 'inventory.json'), 'utf8')) as { objects: Record<string, unknown> };
    expect(Object.keys(inv.objects)).toEqual([`image:${path.join(sb.dir, 'img.qcow2')}`]);
  });
});

describe('prune and cleanup delete only their own files', () => {
  it('a vmdk whose descriptor was edited to name another file: prune deletes only the extents it made', async () => {
    const sb = await box('vmdk-prune');
    const victim = path.join(sb.dir, 'victim.txt');
    await mkdir(path.join(sb.dir, 'img'));
    await writeFile(victim, 'precious\n');
    await sb.yaml(`version: 1
images:
  split: { path: $DIR/img/split.vmdk, format: vmdk, size: 3G, vmdk: { subformat: twoGbMaxExtentSparse } }
`);
    expect((await sb.run('apply')).code).toBe(0);
    const made = (await readdir(path.join(sb.dir, 'img'))).sort();
    expect(made).toEqual(['split-s001.vmdk', 'split-s002.vmdk', 'split.vmdk']);
    const desc = path.join(sb.dir, 'img', 'split.vmdk');
    await writeFile(desc, (await readFile(desc, 'utf8')).replace(/(RW \d+ SPARSE "split-s002\.vmdk")/, '$1\nRW 1 FLAT "../victim.txt" 0'));
    await sb.yaml('version: 1\n');
    const r = await sb.run('apply', '--prune');
    expect(r.code, r.stdout + r.stderr).toBe(0);
    expect(await readdir(path.join(sb.dir, 'img'))).toEqual([]);
    expect(await readFile(victim, 'utf8')).toBe('precious\n');
  });

  it('leftover cleanup removes only directories it made (exact name and marker)', async () => {
    const sb = await box('leftovers');
    const mine = path.join(sb.dir, '.disk.qcow2.reconcile-backup');
    const lookalike = path.join(sb.dir, '.disk.qcow2.reconcile-1-deadbeef');
    for (const d of [mine, lookalike]) {
      await mkdir(d);
      await writeFile(path.join(d, 'keep.txt'), 'user data\n');
    }
    await sb.yaml('version: 1\nimages:\n  disk: { path: $DIR/disk.qcow2, size: 1M }\n');
    expect((await sb.run('apply')).code).toBe(0);
    expect(await readFile(path.join(mine, 'keep.txt'), 'utf8')).toBe('user data\n');
    expect(await readFile(path.join(lookalike, 'keep.txt'), 'utf8')).toBe('user data\n');
  });
});

describe('an image that left the YAML, without libvirt to ask', () => {
  it('plans as before, but is not deleted blind: which domains use it cannot be told', async () => {
    const sb = await box('no-libvirt');
    await sb.yaml('version: 1\nimages:\n  gone: { path: $DIR/gone.qcow2, size: 1M }\n');
    expect((await sb.run('apply')).code).toBe(0);
    await sb.yaml('version: 1\n');
    const nowhere = ['--connect', `qemu:///system?socket=${path.join(sb.dir, 'no-such.sock')}`];
    const plan = await sb.run('plan', ...nowhere);
    expect(plan.code, plan.stderr).toBe(0);
    expect(plan.stdout).toMatch(/gone\.qcow2 \(was images\.gone\) left the YAML; `apply --prune` deletes it/);
    const prune = await sb.run('apply', '--prune', ...nowhere);
    expect(prune.code).toBe(1);
    expect(prune.stderr).toMatch(/gone\.qcow2 \(was images\.gone\) left the YAML, but reconcile cannot tell whether a domain uses it as a disk \(cannot connect to libvirt/);
    expect(existsSync(path.join(sb.dir, 'gone.qcow2'))).toBe(true);
  });
});
