// Off-site copies (`copyTo:`) of incremental backups to S3 (s3rver), Azure Blob (Azurite) and
// a directory over SSH (an sshd of our own), all on this machine: each backup reaches every
// place in chain order, retention removes it there too, restore fetches what is missing here
// (falling back from one place to the next), and a place that is down fails the run, on
// record, and is caught up at the next run.
import { chmod, open, readdir, readFile, rm, stat, writeFile } from 'node:fs/promises';
import path from 'node:path';
import { ListObjectsV2Command, S3Client } from '@aws-sdk/client-s3';
import { BlobServiceClient } from '@azure/storage-blob';
import { execa } from 'execa';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { startPrivateLibvirtd, type PrivateLibvirtd } from '../src/dev/private-libvirtd.js';
import { sandbox, type Sandbox } from './helpers.js';
import { startAzurite, startS3rver, startSshd } from './offsite-helpers.js';

let lv: PrivateLibvirtd;
let sb: Sandbox;
let s3: Awaited<ReturnType<typeof startS3rver>>;
let az: Awaited<ReturnType<typeof startAzurite>>;
let ssh: Awaited<ReturnType<typeof startSshd>>;
const p = (f: string) => path.join(sb.dir, f);

const s3Names = async () => {
  process.env.AWS_SDK_JS_NODE_VERSION_SUPPORT_WARNING_DISABLED = 'true'; // as src/offsite/s3.ts does
  const c = new S3Client({ region: 'us-east-1', endpoint: s3.endpoint, forcePathStyle: true, credentials: { accessKeyId: 'S3RVER', secretAccessKey: 'S3RVER' } });
  const r = await c.send(new ListObjectsV2Command({ Bucket: 'vr-bk', Prefix: 'hosts/h1/' }));
  return (r.Contents ?? []).map((o) => o.Key!.slice('hosts/h1/'.length)).sort();
};
const azNames = async () => {
  const names: string[] = [];
  for await (const b of BlobServiceClient.fromConnectionString(az.connectionString).getContainerClient('vr-bk').listBlobsFlat({ prefix: 'h1/' })) names.push(b.name.slice(3));
  return names.sort();
};
const sshNames = async () => (await readdir(p('remote/h1')).catch(() => [] as string[])).sort();
const namesOf = (id: string) => [`${id}-vda.qcow2`, `${id}.domain.xml`, `${id}.json`].sort();
const holds = async (file: string, mib: number, byte: number) =>
  !/Pattern verification failed/.test((await execa('qemu-io', ['-r', '-U', '-f', 'qcow2', '-c', `read -P ${byte} ${mib}M 1M`, file])).stdout);

interface Run {
  id: string;
  parent?: string;
}
const ids: string[] = [];
const run = async (): Promise<Run> => {
  const r = await sb.run('backup', 'run', 'off', '-o', 'json');
  expect(r.code, r.stdout + r.stderr).toBe(0);
  const out = JSON.parse(r.stdout) as Run;
  ids.push(out.id);
  return out;
};

beforeAll(async () => {
  lv = await startPrivateLibvirtd();
  sb = await sandbox('offsite', { libvirt: lv });
  await chmod(sb.dir, 0o755);
  [s3, az, ssh] = await Promise.all([startS3rver(p('s3'), 'vr-bk'), startAzurite(p('azurite')), startSshd(p('sshd'))]);
  await writeFile(p('s3.cred'), s3.credentials, { mode: 0o600 });
  await writeFile(p('az.cs'), az.connectionString, { mode: 0o600 });
  await sb.yaml(`version: 1
images:
  disk: { path: $DIR/disk.qcow2, size: 16M }
vms:
  db: { create: { memory: 64M, vcpus: 1 }, disks: [{ image: disk }] }
backups:
  off:
    vm: db
    schedule: "0 1 * * *"
    mode: incremental
    destination: $DIR/bk
    keep: 2
    fullEvery: 3
    verify: true
    copyTo:
      - { url: s3://vr-bk/hosts/h1, endpoint: "${s3.endpoint}", pathStyle: true, credentialsFile: $DIR/s3.cred }
      - { url: azure://${az.account}/vr-bk/h1, credentialsFile: $DIR/az.cs }
      - { url: "ssh://root@127.0.0.1:${ssh.port}$DIR/remote/h1", identityFile: $DIR/sshd/client_key, knownHostsFile: $DIR/sshd/known_hosts }
  two:
    vm: db
    schedule: "0 2 * * *"
    mode: copy
    destination: $DIR/bk2
    keep: 1
    copyTo:
      - { url: s3://vr-bk/two, endpoint: "${s3.endpoint}", pathStyle: true, credentialsFile: $DIR/s3.cred }
      - { url: "ssh://root@127.0.0.1:${ssh.port}$DIR/remote/two", identityFile: $DIR/sshd/client_key, knownHostsFile: $DIR/sshd/known_hosts }
`);
  const r = await sb.run('apply');
  if (r.code !== 0) throw new Error(r.stdout + r.stderr);
}, 120_000);
afterAll(async () => {
  await Promise.all([s3?.stop(), az?.stop(), ssh?.stop()]);
  await lv?.stop();
  await sb?.cleanup();
});

describe('copyTo', () => {
  it('sends each backup (copies, definition, record) to S3, Azure and SSH once made and verified', async () => {
    await execa('qemu-io', ['-f', 'qcow2', '-c', 'write -P 0xa1 0 1M', p('disk.qcow2')]);
    await run();
    await execa('qemu-io', ['-f', 'qcow2', '-c', 'write -P 0xb2 1M 1M', p('disk.qcow2')]);
    const second = await run();
    expect(second.parent).toBe(ids[0]);
    const want = [...namesOf(ids[0]!), ...namesOf(ids[1]!)].sort();
    expect(await s3Names()).toEqual(want);
    expect(await azNames()).toEqual(want);
    expect(await sshNames()).toEqual(want);
    const listed = JSON.parse((await sb.run('backup', 'list', 'off', '-o', 'json')).stdout) as { id: string }[];
    expect(listed.map((x) => x.id)).toEqual(ids);
    // No credential is in the records, the log or the process arguments.
    const state = JSON.stringify(await readdir(sb.stateDir)) + (await execa('cat', [path.join(sb.stateDir, 'backups.json')])).stdout;
    expect(state).not.toContain('S3RVER');
    expect(state).not.toContain('AccountKey');
  });

  it('a place that is down fails the run, which is on record; the next run catches it up, in chain order', async () => {
    await s3.stop();
    const r = await sb.run('backup', 'run', 'off');
    expect(r.code).not.toBe(0);
    expect(r.stderr).toMatch(/was made here, but copying \S+ to s3:\/\/vr-bk\/hosts\/h1/);
    const third = JSON.parse((await sb.run('backup', 'list', 'off', '-o', 'json')).stdout).at(-1) as { id: string; status: string };
    expect(third.status).toBe('ok');
    ids.push(third.id);
    expect((await sb.run('plan')).stdout).toMatch(/backups\.off: its last run failed .*s3:\/\/vr-bk\/hosts\/h1/);
    expect(await azNames()).toContain(`${third.id}-vda.qcow2`);
    await s3.start();
    // The fourth is full (fullEvery 3); keep 2 keeps it and the third, whose chain holds the first two.
    await run();
    expect(await s3Names()).toEqual(ids.flatMap(namesOf).sort());
  });

  it('retention removes a backup from every place too', async () => {
    await execa('qemu-io', ['-f', 'qcow2', '-c', 'write -P 0xc3 2M 1M', p('disk.qcow2')]);
    const fifth = await run();
    expect(fifth.parent).toBe(ids[3]);
    // keep 2: the fifth and the fourth (its base); the first chain goes, here and there.
    const kept = [...namesOf(ids[3]!), ...namesOf(ids[4]!)].sort();
    expect((await readdir(p('bk'))).sort()).toEqual(kept);
    expect(await s3Names()).toEqual(kept);
    expect(await azNames()).toEqual(kept);
    expect(await sshNames()).toEqual(kept);
  });

  it('restore fetches from a place what is missing here, trying the next place when one is down', async () => {
    for (const [i, down] of [[], [s3], [s3, az]].entries()) {
      await rm(p('bk'), { recursive: true, force: true });
      for (const s of down) await s.stop();
      const to = p(`fetched-${i}.qcow2`);
      const r = await sb.run('restore', 'off', '--from', ids[4]!, '--to', to);
      expect(r.code, r.stdout + r.stderr).toBe(0);
      expect(r.stdout).toMatch(new RegExp(`fetched from ${['s3', 'azure', 'ssh'][i]}://`));
      for (const [mib, byte] of [0xa1, 0xb2, 0xc3].entries()) expect(await holds(to, mib, byte), `${i}: ${mib} MiB`).toBe(true);
    }
    await s3.start();
    await az.start();
  });

  it('a removal that fails at a place is remembered and done at the next run (adversarial pass: it was lost)', async () => {
    const two = async () => {
      const r = await sb.run('backup', 'run', 'two', '-o', 'json');
      return { code: r.code, id: r.code === 0 ? (JSON.parse(r.stdout) as Run).id : undefined, out: r.stdout + r.stderr };
    };
    const a = await two();
    expect(a.code, a.out).toBe(0);
    await ssh.stop();
    const b = await two();
    expect(b.code).not.toBe(0);
    const pending = JSON.parse(await readFile(path.join(sb.stateDir, 'backups.json'), 'utf8')).offsiteDeletes as { schedule: string; url: string; names: string[] }[];
    expect(pending).toEqual([expect.objectContaining({ schedule: 'two', url: expect.stringMatching(/^ssh:/), names: namesOf(a.id!) })]);
    await ssh.start();
    const c = await two();
    expect(c.code, c.out).toBe(0);
    expect((await readdir(p('remote/two'))).sort()).toEqual(namesOf(c.id!));
  });

  it('a copy fetched back is checked against what was sent: a damaged one is discarded and the next place is used', async () => {
    const listed = JSON.parse((await sb.run('backup', 'list', 'two', '-o', 'json')).stdout) as { id: string }[];
    const id = listed.at(-1)!.id;
    // Damage the copy S3 holds (s3rver keeps each object as a file of its own).
    const objects = (await readdir(p('s3'), { recursive: true })) as string[];
    const object = p(`s3/${objects.find((n) => n.includes(`${id}-vda.qcow2`) && n.endsWith('._S3rver_object'))!}`);
    const fh = await open(object, 'r+');
    const size = (await fh.stat()).size;
    await fh.write(Buffer.from('damage'), 0, 6, Math.floor(size / 2));
    await fh.close();
    await rm(p('bk2'), { recursive: true, force: true });
    const r = await sb.run('restore', 'two', '--from', id, '--to', p('two-restored.qcow2'));
    expect(r.code, r.stdout + r.stderr).toBe(0);
    expect(r.stdout).toMatch(/from s3:\/\/vr-bk\/two.* failed: what was fetched is not what was sent/);
    expect(r.stdout).toMatch(/fetched from ssh:\/\/.*\(SHA-256 checked\)/);
    for (const [mib, byte] of [0xa1, 0xb2, 0xc3].entries()) expect(await holds(p('two-restored.qcow2'), mib, byte)).toBe(true);
    expect((await stat(p(`bk2/${id}-vda.qcow2`))).mode & 0o777).toBe(0o600);
  });
});
