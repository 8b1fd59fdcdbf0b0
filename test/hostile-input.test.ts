// Hostile input: a saved plan edited to run other operations or made for another state
// directory, a comma in a passphrase file name (qemu option injection), control characters
// in paths (fake plan lines), and one file named twice on the command line.
import { existsSync } from 'node:fs';
import { readFile, writeFile } from 'node:fs/promises';
import path from 'node:path';
import { execa } from 'execa';
import { describe, expect, it, onTestFinished } from 'vitest';
import { startPrivateLibvirtd } from '../src/dev/private-libvirtd.js';
import { cli, qemuImg, sandboxes } from './helpers.js';

const box = sandboxes();

describe('saved plans', () => {
  it('an edited plan is refused (its operations are never executed as written); so is one made for another state directory', async () => {
    const sb = await box('tampered');
    const victim = path.join(sb.dir, 'victim.txt');
    await writeFile(victim, 'precious\n');
    await sb.yaml('version: 1\nimages:\n  a: { path: $DIR/a.qcow2, size: 1M }\n');
    const planFile = path.join(sb.dir, 'plan.json');
    expect((await sb.run('plan', '--out', planFile)).code).toBe(0);
    const good = await readFile(planFile, 'utf8');
    const plan = JSON.parse(good);
    plan.actions.push({
      id: 'inventory:x',
      resource: 'image',
      kind: 'delete',
      code: 'left-yaml',
      reason: 'x',
      destructive: true,
      changes: [],
      dependsOn: [],
      digest: 'e'.repeat(64),
    });
    await writeFile(planFile, JSON.stringify(plan));
    const r = await sb.run('apply', planFile);
    expect(r.code).toBe(1);
    expect(r.stderr).toMatch(/plan\.json does not match what `reconcile plan` makes of the YAML it embeds \(inventory:x\); was it edited\? Nothing was applied/);
    expect(await readFile(victim, 'utf8')).toBe('precious\n');
    expect(existsSync(path.join(sb.dir, 'a.qcow2'))).toBe(false);

    await writeFile(planFile, good);
    const other = await cli(['apply', planFile, '--state-dir', path.join(sb.dir, 'other-state')]);
    expect(other.code).toBe(1);
    expect(other.stderr).toMatch(/was made for state directory .*\/state; this apply uses .*other-state/);
    expect(existsSync(path.join(sb.dir, 'other-state'))).toBe(false);

    // An operation written into the file is not part of the format: refused before anything is recomputed.
    plan.actions[1] = { ...plan.actions[0], op: { type: 'image.delete', path: victim, extents: [], inventoryKey: 'x', exists: true } };
    await writeFile(planFile, JSON.stringify(plan));
    expect((await sb.run('apply', planFile)).stderr).toMatch(/is not a plan saved by `reconcile plan --out` \(\/actions\/1: must NOT have additional properties\)/);
    await writeFile(planFile, '{"format":"virt-reconcile-plan","formatVersion":2,"actions":[]}');
    expect((await sb.run('apply', planFile)).stderr).toMatch(
      /is not a plan saved by `reconcile plan --out` \(no createdAt; no stateDir; no options; no observed; no refusals; no notes; no inputs/,
    );
    await writeFile(planFile, '{"formatVersion":1,"actions":[]}');
    expect((await sb.run('apply', planFile)).stderr).toMatch(/is a plan of format version 1; this version reads version 2\. Run `reconcile plan --out` again/);

    await writeFile(planFile, good);
    const ok = await sb.run('apply', planFile);
    expect(ok.code, ok.stderr).toBe(0);
    expect(existsSync(path.join(sb.dir, 'a.qcow2'))).toBe(true);
  });
});

describe('escaping', () => {
  it('a comma in passphraseFile is a file name, not a qemu option', async () => {
    // (Its libvirt secret goes to a daemon of the test's own, not the host's.)
    const lv = await startPrivateLibvirtd();
    onTestFinished(() => lv.stop());
    const sb = await box('comma', { libvirt: lv });
    const pass = path.join(sb.dir, 'p,format=base64');
    await writeFile(pass, 'correct horse battery staple');
    await writeFile(path.join(sb.dir, 'plain'), 'correct horse battery staple');
    await sb.yaml(`version: 1\nimages:\n  e: { path: $DIR/e.qcow2, size: 1M, encryption: { format: luks, passphraseFile: "${pass}" } }\n`);
    const r = await sb.run('apply');
    expect(r.code, r.stdout + r.stderr).toBe(0);
    // The key is the file's text as written: it opens with the same text from a plain file.
    const info = await qemuImg(
      'info',
      '--object',
      `secret,id=s,file=${path.join(sb.dir, 'plain')}`,
      '--image-opts',
      `driver=qcow2,file.filename=${path.join(sb.dir, 'e.qcow2')},encrypt.key-secret=s`,
    );
    expect(info).toMatch(/encrypted: yes/);
  });

  it('control characters in a path cannot fake plan lines', async () => {
    const sb = await box('ctrl');
    await sb.yaml('version: 1\nimages:\n  a: { path: "$DIR/a\\n    + images.fake  create   \\u001b[32mlooks fine.qcow2", size: 1M }\n');
    const r = await sb.run('plan');
    expect(r.code, r.stderr).toBe(0);
    const lines = r.stdout.split('\n');
    expect(lines.filter((l) => /images\.fake/.test(l))).toHaveLength(1);
    expect(r.stdout).toContain('\\n    + images.fake');
    expect(r.stdout).toContain('\\u001b[32m');
    expect(r.stdout).not.toContain('\u001b');
  });

  it('one file named twice on the command line is read once', async () => {
    const sb = await box('twice');
    const f = await sb.yaml('version: 1\nimages:\n  a: { path: $DIR/a.qcow2, size: 1M }\n');
    const r = await execa(
      'node',
      [path.join(process.cwd(), 'dist', 'cli.js'), 'validate', '-f', f, '-f', path.join(path.dirname(f), '.', path.basename(f)), '-f', path.dirname(f)],
      { reject: false, cwd: sb.dir },
    );
    expect(r.exitCode, r.stderr).toBe(0);
    expect(r.stdout).toMatch(/valid: 1 file\(s\)/);
  });
});
