// Images made from container images (`source.container`): one in local container storage
// (podman, here a private store of the test's own: CONTAINERS_STORAGE_CONF), an OCI archive
// and an OCI layout directory. The container images are made offline (`podman import` of a
// tar made here); the results are checked with debugfs and blkid.
import { chown, mkdir, writeFile } from 'node:fs/promises';
import path from 'node:path';
import { execa } from 'execa';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { qemuImg, sandbox, type Sandbox } from './helpers.js';

let sb: Sandbox;
const p = (f: string) => path.join(sb.dir, f);
const podman = (...a: string[]) => execa('podman', a);

/** A root filesystem with one file (owner 33:33), imported as NAME. */
async function importImage(name: string, content: string): Promise<void> {
  const root = p(`rootfs-${content.length}`);
  await mkdir(path.join(root, 'etc'), { recursive: true });
  await writeFile(path.join(root, 'etc', 'greeting'), content);
  await chown(path.join(root, 'etc', 'greeting'), 33, 33);
  await execa('tar', ['-C', root, '-cf', `${root}.tar`, '.']);
  await podman('import', '-q', `${root}.tar`, name);
}

const debugfs = async (image: string, cmd: string) => {
  const raw = `${image}.raw`;
  await qemuImg('convert', '-O', 'raw', image, raw);
  return (await execa('debugfs', ['-R', cmd, raw])).stdout;
};

beforeAll(async () => {
  sb = await sandbox('containers');
  // Every podman this test and reconcile run uses the test's store, never the host's.
  await writeFile(p('storage.conf'), `[storage]\ndriver = "vfs"\ngraphroot = "${p('graph')}"\nrunroot = "${p('run')}"\n`);
  process.env.CONTAINERS_STORAGE_CONF = p('storage.conf');
  await importImage('localhost/vr-app:1', 'hello\n');
});

afterAll(async () => {
  await podman('rmi', '-a', '-f').catch(() => undefined);
  await sb?.cleanup();
});

describe('source.container', () => {
  it('an image in local storage becomes an ext4 image of its root filesystem (owners kept); the same image ID is a no-op, a new one under the tag a rebuild', async () => {
    await sb.yaml(`version: 1
images:
  app: { path: $DIR/img/app.qcow2, size: 32M, source: { container: localhost/vr-app:1 } }
`);
    const r = await sb.run('apply');
    expect(r.code, r.stdout + r.stderr).toBe(0);
    const st = await debugfs(p('img/app.qcow2'), 'stat /etc/greeting');
    expect(st).toMatch(/User:\s+33\s+Group:\s+33/);
    expect(await debugfs(p('img/app.qcow2'), 'cat /etc/greeting')).toBe('hello');
    const id = (await podman('image', 'inspect', '--format', '{{.Id}}', 'localhost/vr-app:1')).stdout.trim();
    expect(JSON.stringify(JSON.parse(await import('node:fs/promises').then((fs) => fs.readFile(path.join(sb.stateDir, 'inventory.json'), 'utf8'))))).toContain(
      `container:sha256:${id}`,
    );
    // Nothing left mounted, no container made.
    expect((await podman('image', 'mount')).stdout.trim()).toBe('');
    expect((await podman('ps', '-a', '-q')).stdout.trim()).toBe('');
    await sb.resetTrace();
    expect((await sb.run('apply')).stdout).toMatch(/No changes/);
    expect((await sb.spawned()).filter((a) => a[0]!.startsWith('mkfs'))).toEqual([]);
    // A new build under the same name.
    await importImage('localhost/vr-app:1', 'hello again\n');
    const refused = await sb.run('plan');
    expect(refused.code).toBe(1);
    expect(refused.stdout + refused.stderr).toMatch(/img\/app\.qcow2 must be rebuilt \(source container:sha256:\w+ -> container:sha256:\w+\); .*--allow-replace/);
    const again = await sb.run('apply', '--allow-replace');
    expect(again.code, again.stdout + again.stderr).toBe(0);
    expect(await debugfs(p('img/app.qcow2'), 'cat /etc/greeting')).toBe('hello again');
  });

  it('an OCI archive and an OCI layout directory (a private store, removed after), as btrfs and xfs; a missing image is refused at plan time, naming it', async () => {
    await podman('save', '-q', '--format', 'oci-archive', '-o', p('app.oci.tar'), 'localhost/vr-app:1');
    await podman('save', '-q', '--format', 'oci-dir', '-o', p('app-oci'), 'localhost/vr-app:1');
    await sb.yaml(`version: 1
images:
  arch: { path: $DIR/img/arch.img, format: raw, size: 128M, filesystem: btrfs, source: { container: "oci-archive:$DIR/app.oci.tar" } }
  dir: { path: $DIR/img/dir.img, format: raw, size: 320M, filesystem: xfs, source: { container: "oci:$DIR/app-oci:localhost/vr-app:1" }, rebuild: onChange }
`);
    const r = await sb.run('apply', '--prune');
    expect(r.code, r.stdout + r.stderr).toBe(0);
    const blkid = async (f: string) => (await execa('blkid', ['-p', '-o', 'value', '-s', 'TYPE', f])).stdout.trim();
    expect(await blkid(p('img/arch.img'))).toBe('btrfs');
    expect(await blkid(p('img/dir.img'))).toBe('xfs');
    const xfs = (await execa('xfs_db', ['-r', '-c', 'path /etc/greeting', '-c', 'print core.uid core.size', p('img/dir.img')])).stdout;
    expect(xfs).toMatch(/core\.uid = 33/);
    expect(xfs).toMatch(/core\.size = 12/);
    expect((await sb.run('plan')).stdout).toMatch(/No changes/);
    // The scratch stores are gone.
    expect(await import('node:fs/promises').then((fs) => fs.readdir(path.join(sb.stateDir, 'scratch')).catch(() => []))).toEqual([]);
    await sb.yaml(`version: 1
images:
  gone: { path: $DIR/img/gone.qcow2, size: 32M, source: { container: localhost/no-such:1 } }
`);
    const plan = await sb.run('plan');
    expect(plan.code).toBe(1);
    expect(plan.stdout + plan.stderr).toMatch(/images\.gone: .*source\.container localhost\/no-such:1: not in local container storage/);
  });
});

describe('source.container, interrupted', () => {
  it('a build killed while the image of local storage is mounted: the next apply unmounts it, says so, and builds', async () => {
    await sb.yaml(`version: 1
images:
  killed: { path: $DIR/img/killed.qcow2, size: 32M, source: { container: localhost/vr-app:1 } }
`);
    const { cli } = await import('./helpers.js');
    const killed = await cli(['apply', '-f', p('storage.yaml'), '--state-dir', sb.stateDir], { VIRT_RECONCILE_FAILPOINT: 'container-mounted' });
    expect(killed.code).toBe(-1);
    expect((await podman('image', 'mount')).stdout).toMatch(/vr-app/);
    const r = await sb.run('apply');
    expect(r.code, r.stdout + r.stderr).toBe(0);
    expect(r.stdout).toMatch(/unmounted container image \w+, left mounted by an interrupted apply/);
    expect((await podman('image', 'mount')).stdout.trim()).toBe('');
  });
});

// bcvk is not packaged for Debian 12: the install itself runs only where it is installed and a
// bootc image is named (VIRT_RECONCILE_BOOTC_IMAGE, in local container storage: no registry here).
const bcvk = await execa('bcvk', ['--version']).then(
  () => true,
  () => false,
);
const bootcImage = process.env.VIRT_RECONCILE_BOOTC_IMAGE;

describe('source.container with bootc', () => {
  it.skipIf(bcvk)('without bcvk: validate accepts it, plan refuses it naming bcvk and the alternative, apply makes nothing', async () => {
    await sb.yaml(`version: 1
images:
  os: { path: $DIR/img/os.qcow2, size: 10G, source: { container: localhost/vr-app:1, bootc: { kargs: [console=ttyS0] } } }
`);
    expect((await sb.run('validate')).code).toBe(0);
    const plan = await sb.run('plan');
    expect(plan.code).toBe(1);
    expect(plan.stdout + plan.stderr).toMatch(/images\.os: .*bcvk is not installed \(bootc: true installs the image through `bcvk to-disk`\); .*remove bootc/);
    const apply = await sb.run('apply');
    expect(apply.code).not.toBe(0);
    expect(await import('node:fs/promises').then((fs) => fs.readdir(p('img')).catch(() => []))).not.toContain('os.qcow2');
  });

  it.runIf(bcvk && bootcImage)(
    'with bcvk: the image is installed to a bootable disk (a partition table, the digest recorded); unchanged is a no-op, new kargs a rebuild',
    { timeout: 1_800_000 },
    async () => {
      // The host's container storage: bcvk reads the image there, not in this file's private store.
      const conf = process.env.CONTAINERS_STORAGE_CONF;
      delete process.env.CONTAINERS_STORAGE_CONF;
      try {
        await sb.yaml(`version: 1
images:
  os: { path: $DIR/img/os.qcow2, size: 12G, source: { container: "${bootcImage}", bootc: true } }
`);
        const r = await sb.run('apply');
        expect(r.code, r.stdout + r.stderr).toBe(0);
        const raw = p('img/os.raw');
        await qemuImg('convert', '-O', 'raw', p('img/os.qcow2'), raw);
        expect((await execa('sfdisk', ['-d', raw])).stdout).toMatch(/label: gpt/);
        const id = (await podman('image', 'inspect', '--format', '{{.Id}}', bootcImage!)).stdout.trim();
        const inventory = await import('node:fs/promises').then((fs) => fs.readFile(path.join(sb.stateDir, 'inventory.json'), 'utf8'));
        expect(inventory).toContain(`bootc:sha256:${id}`);
        await sb.resetTrace();
        expect((await sb.run('apply')).stdout).toMatch(/No changes/);
        expect((await sb.spawned()).filter((a) => a[0] === 'bcvk' && a[1] === 'to-disk')).toEqual([]);
        await sb.yaml(`version: 1
images:
  os: { path: $DIR/img/os.qcow2, size: 12G, source: { container: "${bootcImage}", bootc: { kargs: [console=ttyS0] } } }
`);
        expect((await sb.run('plan')).stdout).toMatch(/must be rebuilt|replace/);
      } finally {
        if (conf) process.env.CONTAINERS_STORAGE_CONF = conf;
      }
    },
  );
});
