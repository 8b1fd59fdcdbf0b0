// A remote libvirt: `connection: qemu+ssh://…` (and qemu+libssh://) to a "remote host" made
// here — a private libvirtd in a mount namespace of its own, with a private /srv/vr-remote
// this side cannot see, and an sshd inside that namespace, reached with a key made by the
// test. libvirt-managed objects (pools, volumes — created, uploaded, resized through libvirt —,
// domains, secrets) are made there; what reconcile would do with files itself is refused at
// plan time, naming the alternative.
import { chmod, mkdir, writeFile } from 'node:fs/promises';
import { existsSync } from 'node:fs';
import path from 'node:path';
import { execa } from 'execa';
import { afterAll, describe, expect, it } from 'vitest';
import { startPrivateLibvirtd, type PrivateLibvirtd } from '../src/dev/private-libvirtd.js';
import { qemuImg, qemuInfo, sandbox, type Sandbox } from './helpers.js';
import { startSshd } from './offsite-helpers.js';

const REMOTE = '/srv/vr-remote';
let lv: PrivateLibvirtd | undefined;
let sb: Sandbox | undefined;
let sshd: Awaited<ReturnType<typeof startSshd>> | undefined;
afterAll(async () => {
  await sshd?.stop();
  await lv?.stop();
  await sb?.cleanup();
});

describe('remote libvirt', () => {
  it('qemu+ssh: pools, volumes (blank, uploaded from a local file, grown), domains and secrets are made on the remote host; a second apply does nothing', {
    timeout: 180_000,
  }, async () => {
    lv = await startPrivateLibvirtd({ privateDirs: [REMOTE] });
    sb = await sandbox('remote-libvirt');
    sshd = await startSshd(path.join(sb.dir, 'sshd'), lv.nsenter);
    // libvirt's ssh transport runs `ssh`, which checks host keys against the user's known_hosts:
    // here ssh itself, told to use the test's (as an agent's ~/.ssh/known_hosts would be).
    const ssh = path.join(sb.dir, 'ssh-strict');
    await writeFile(ssh, `#!/bin/sh\nexec ssh -o StrictHostKeyChecking=yes -o UserKnownHostsFile=${sshd.knownHostsFile} -o GlobalKnownHostsFile=/dev/null "$@"\n`);
    await chmod(ssh, 0o755);
    const uri = `qemu+ssh://root@127.0.0.1:${sshd.port}/system?keyfile=${sshd.identityFile}&command=${ssh}&no_tty=1`;
    await qemuImg('create', '-q', '-f', 'raw', path.join(sb.dir, 'seed.raw'), '4M');
    await execa('qemu-io', ['-f', 'raw', '-c', 'write -P 0x6b 0 1M', path.join(sb.dir, 'seed.raw')]);
    await writeFile(path.join(sb.dir, 'secret'), 'remote-pass\n', { mode: 0o600 });
    const yaml = (size: string) => `version: 1
connection: "${uri}"
pools:
  rp: { type: dir, path: ${REMOTE}/pool }
  fp: { type: dir, path: ${REMOTE}/found }
secrets:
  rs: { usage: ceph, name: client.remote, valueFile: $DIR/secret, encoding: raw }
images:
  blank: { pool: rp, size: ${size} }
  data: { pool: rp, format: qcow2, size: 16M, source: { file: $DIR/seed.raw } }
vms:
  rv: { create: { memory: 64M, vcpus: 1 }, disks: [{ image: blank }, { image: data, cache: none }] }
`;
    // A directory already there (the remote host's own) is used as it is, told by libvirt there.
    await mkdir(path.join(lv.base, 'private', '0', 'found'));
    await writeFile(path.join(lv.base, 'private', '0', 'found', 'keep.txt'), 'theirs\n');
    await sb.yaml(yaml('8M'));
    const r = await sb.run('apply');
    expect(r.code, r.stdout + r.stderr).toBe(0);
    // Made there, not here.
    expect(existsSync(`${REMOTE}/pool`)).toBe(false);
    const there = (f: string) => path.join(lv!.base, 'private', '0', f);
    expect(existsSync(there('pool/blank.qcow2'))).toBe(true);
    const v = (...a: string[]) => execa('virsh', ['-q', '-c', lv!.uri, ...a]).then((x) => String(x.stdout));
    expect(await v('list', '--all', '--name')).toMatch(/rv/);
    expect(await v('secret-list')).toMatch(/client\.remote/);
    // The uploaded volume holds the local file's data, converted to qcow2.
    await qemuImg('convert', '-O', 'raw', there('pool/data.qcow2'), path.join(sb.dir, 'back.raw'));
    expect((await execa('cmp', ['-n', String(4 * 1024 * 1024), path.join(sb.dir, 'seed.raw'), path.join(sb.dir, 'back.raw')], { reject: false })).exitCode).toBe(0);
    expect((await sb.run('plan')).stdout).toMatch(/No changes/);
    expect(await v('vol-list', 'fp')).toMatch(/keep\.txt/);
    expect(await v('pool-list', '--all', '--name')).not.toMatch(/vr-probe/);
    // Destroyed: the directory found there stays (libvirt deletes only what reconcile made).
    const inv = await import('node:fs/promises').then((fs) => fs.readFile(path.join(sb!.stateDir, 'inventory.json'), 'utf8'));
    expect(inv).toMatch(/"storage":\s*"found"/);
    // Grown through libvirt (vol-resize there).
    await sb.yaml(yaml('24M'));
    const grow = await sb.run('apply');
    expect(grow.code, grow.stdout + grow.stderr).toBe(0);
    expect((await qemuInfo(there('pool/blank.qcow2')))['virtual-size']).toBe(24 * 1024 * 1024);
    // destroy: everything reconcile made goes, through libvirt there; the directory it found stays.
    const d = await sb.run('destroy', '--auto-approve');
    expect(d.code, d.stdout + d.stderr).toBe(0);
    expect(await v('pool-list', '--all', '--name')).not.toMatch(/\b(rp|fp)\b/);
    expect(existsSync(there('found/keep.txt'))).toBe(true);
  });

  it('qemu+libssh with known_hosts in the URI; image files by path, backups and permissions are refused at plan time, naming the alternative', { timeout: 120_000 }, async () => {
    const uri = `qemu+libssh://root@127.0.0.1:${sshd!.port}/system?keyfile=${sshd!.identityFile}&known_hosts=${sshd!.knownHostsFile}&sshauth=privkey`;
    await sb!.yaml(`version: 1
connection: "${uri}"
pools:
  perm: { type: dir, path: ${REMOTE}/perm, permissions: { mode: "0750" } }
  rp2: { type: dir, path: ${REMOTE}/pool2 }
images:
  local: { path: ${REMOTE}/local.qcow2, size: 8M }
  ok: { pool: rp2, size: 8M }
vms:
  bv: { create: { memory: 64M, vcpus: 1 }, disks: [{ image: ok }] }
backups:
  nightly: { vm: bv, schedule: "0 3 * * *" }
`);
    const plan = await sb!.run('plan');
    expect(plan.code).toBe(1);
    const out = plan.stdout + plan.stderr;
    expect(out).toMatch(
      /images\.local: .*an image file by path is made and checked with qemu-img on this host, but the connection goes to 127\.0\.0\.1:\d+\. Declare it as a pool volume/,
    );
    expect(out).toMatch(/pools\.perm: .*permissions of a pool's directory on 127\.0\.0\.1:\d+ would be checked and changed on this host/);
    expect(out).toMatch(/backups\.nightly: .*run reconcile on that host for backups/);
    expect(existsSync(`${REMOTE}/local.qcow2`)).toBe(false);
  });
});
