// Publishing images to object storage (`publish:`), through the CLI against s3rver (S3, and
// gs:// through the S3-compatible path) and Azurite started by the test; checked with the
// official SDKs, never with reconcile's own view. The first test is the scenario: a
// download turned into a fixed VHD published as a page blob and to a bucket, plus an ext4
// image of a directory, and a second apply that does nothing.
import { createHash } from 'node:crypto';
import { mkdir, readFile, writeFile } from 'node:fs/promises';
import path from 'node:path';
import { DeleteObjectCommand, GetObjectCommand, HeadObjectCommand, PutObjectCommand, S3Client } from '@aws-sdk/client-s3';
import { BlobServiceClient } from '@azure/storage-blob';
import { execa } from 'execa';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { qemuImg, sandbox, type Sandbox } from './helpers.js';
import { serve, type Served } from './http-helpers.js';
import { startAzurite, startS3rver } from './offsite-helpers.js';

const BUCKET = 'vr-pub';
let sb: Sandbox;
let s3: Awaited<ReturnType<typeof startS3rver>>;
let az: Awaited<ReturnType<typeof startAzurite>>;
let www: Served;
const p = (f: string) => path.join(sb.dir, f);
const sha256 = async (f: string) =>
  createHash('sha256')
    .update(await readFile(f))
    .digest('hex');
let s3c: S3Client;
const container = () => BlobServiceClient.fromConnectionString(az.connectionString).getContainerClient('images');
/** The SHA-256 of a blob's content as Azurite serves it. */
const blobSha256 = async (blob: { downloadToBuffer(): Promise<Buffer> }) =>
  createHash('sha256')
    .update(await blob.downloadToBuffer())
    .digest('hex');

beforeAll(async () => {
  sb = await sandbox('publish');
  [s3, az] = await Promise.all([startS3rver(p('s3'), BUCKET), startAzurite(p('azurite'))]);
  await writeFile(p('aws'), s3.credentials, { mode: 0o600 });
  await writeFile(p('azure'), az.connectionString, { mode: 0o600 });
  s3c = new S3Client({ region: 'us-east-1', endpoint: s3.endpoint, forcePathStyle: true, credentials: { accessKeyId: 'S3RVER', secretAccessKey: 'S3RVER' } });
  await mkdir(p('www'));
  await qemuImg('create', '-q', '-f', 'raw', p('data.raw'), '6M');
  await execa('qemu-io', ['-f', 'raw', '-c', 'write -P 0x5a 1M 2M', p('data.raw')]);
  await qemuImg('convert', '-O', 'qcow2', p('data.raw'), p('www/os.qcow2'));
  await execa('xz', ['-0', p('www/os.qcow2')]);
  await writeFile(p('www/SHA256SUMS'), `${await sha256(p('www/os.qcow2.xz'))}  os.qcow2.xz\n`);
  www = await serve(p('www'), { range: true });
  await mkdir(p('tree/etc'), { recursive: true });
  await writeFile(p('tree/etc/motd'), 'published\n');
});

afterAll(async () => {
  await Promise.all([s3?.stop(), az?.stop(), www?.close()]);
  await sb?.cleanup();
});

const scenario = () => `version: 1
images:
  os:
    path: $DIR/img/os.qcow2
    source: { url: ${www.url}/os.qcow2.xz, checksumUrl: ${www.url}/SHA256SUMS }
  azure-disk:
    path: $DIR/img/os.vhd
    format: vhd
    vhd: { subformat: fixed }
    source: { image: os }
    publish:
      - to: azure://${az.account}/images/os.vhd
        credentialsFile: $DIR/azure
      - to: s3://${BUCKET}/exports/os.vhd
        endpoint: ${s3.endpoint}
        credentialsFile: $DIR/aws
  data:
    path: $DIR/img/data.qcow2
    size: 16M
    source: { directory: $DIR/tree }
    publish:
      - to: gs://${BUCKET}/gcs/data.qcow2
        endpoint: ${s3.endpoint}
        credentialsFile: $DIR/aws
        prune: true
`;

describe('publish', () => {
  it('a download made a fixed VHD goes up as an Azure page blob and to S3, an ext4 image of a directory to gs://; a second apply downloads, builds and uploads nothing', async () => {
    await sb.yaml(scenario());
    const r = await sb.run('apply');
    expect(r.code, r.stdout + r.stderr).toBe(0);
    const vhd = await sha256(p('img/os.vhd'));
    // Azure: a page blob with the image's bytes and its digest.
    const blob = container().getBlobClient('os.vhd');
    const props = await blob.getProperties();
    expect(props.blobType).toBe('PageBlob');
    expect(props.metadata?.virtreconcilesha256).toBe(vhd);
    expect(
      createHash('sha256')
        .update(await blob.downloadToBuffer())
        .digest('hex'),
    ).toBe(vhd);
    // S3 and the gs:// path (S3-compatible API): the objects and their digests.
    const head = await s3c.send(new HeadObjectCommand({ Bucket: BUCKET, Key: 'exports/os.vhd' }));
    expect(head.Metadata?.virtreconcilesha256).toBe(vhd);
    expect(head.ContentLength).toBe((await readFile(p('img/os.vhd'))).length);
    const gs = await s3c.send(new HeadObjectCommand({ Bucket: BUCKET, Key: 'gcs/data.qcow2' }));
    expect(gs.Metadata?.virtreconcilesha256).toBe(await sha256(p('img/data.qcow2')));
    // show lists each target, in sync.
    const show = await sb.run('show');
    expect(show.stdout).toMatch(new RegExp(`azure-disk\\s+azure://${az.account}/images/os\\.vhd\\s+\\S+\\s+in-sync`));
    expect(show.stdout).toMatch(/data\s+gs:\/\/vr-pub\/gcs\/data\.qcow2\s+\S+\s+in-sync/);
    // Again: nothing downloaded, converted, made or uploaded.
    www.requests.length = 0;
    await sb.resetTrace();
    const again = await sb.run('apply');
    expect(again.code).toBe(0);
    expect(again.stdout).toMatch(/No changes/);
    expect(www.requests.filter((q) => q.path === '/os.qcow2.xz')).toEqual([]);
    expect((await sb.spawned()).filter((a) => a[0]!.startsWith('mkfs') || (a[0] === 'qemu-img' && a[1] === 'convert'))).toEqual([]);
    expect((await blob.getProperties()).lastModified).toEqual(props.lastModified);
    expect((await s3c.send(new HeadObjectCommand({ Bucket: BUCKET, Key: 'exports/os.vhd' }))).ETag).toBe(head.ETag);
  });

  it('a changed image is pending in plan and show, and uploaded again; a place that is down fails the apply, shows failed, and the next apply catches up', async () => {
    await execa('qemu-io', ['-f', 'qcow2', '-c', 'write -P 0x77 8M 1M', p('img/data.qcow2')]);
    const now = await sha256(p('img/data.qcow2'));
    const plan = await sb.run('plan');
    expect(plan.stdout).toMatch(/publish:gs:\/\/vr-pub\/gcs\/data\.qcow2\s+update\s+.*data\.qcow2 changed since it was published/);
    expect((await sb.run('show')).stdout).toMatch(/data\s+gs:\/\/vr-pub\/gcs\/data\.qcow2\s+\S+\s+pending/);
    await s3.stop();
    try {
      const down = await sb.run('apply');
      expect(down.code).toBe(1);
      expect(down.stdout + down.stderr).toMatch(/publish:gs:\/\/vr-pub\/gcs\/data\.qcow2: FAILED/);
      const show = await sb.run('show', '-o', 'json');
      const pub = JSON.parse(show.stdout).published as { to: string; status: string }[];
      expect(pub.find((x) => x.to.startsWith('gs://'))?.status).toBe('failed');
    } finally {
      await s3.start();
    }
    const up = await sb.run('apply');
    expect(up.code, up.stdout + up.stderr).toBe(0);
    expect((await s3c.send(new HeadObjectCommand({ Bucket: BUCKET, Key: 'gcs/data.qcow2' }))).Metadata?.virtreconcilesha256).toBe(now);
    expect((await sb.run('plan')).stdout).toMatch(/No changes/);
  });

  it('an object reconcile did not put at a target is left alone (refused, naming it)', async () => {
    await s3c.send(new PutObjectCommand({ Bucket: BUCKET, Key: 'theirs/os.vhd', Body: 'not ours' }));
    await sb.yaml(
      scenario().replace(
        `      - to: s3://${BUCKET}/exports/os.vhd`,
        `      - to: s3://${BUCKET}/theirs/os.vhd\n        endpoint: ${s3.endpoint}\n        credentialsFile: $DIR/aws\n      - to: s3://${BUCKET}/exports/os.vhd`,
      ),
    );
    const r = await sb.run('apply');
    expect(r.code).toBe(1);
    expect(r.stdout + r.stderr).toMatch(
      /publish:s3:\/\/vr-pub\/theirs\/os\.vhd: .*an object reconcile did not publish is at s3:\/\/vr-pub\/theirs\/os\.vhd \(8 bytes, without its digest\); it is left alone/,
    );
    const head = await s3c.send(new HeadObjectCommand({ Bucket: BUCKET, Key: 'theirs/os.vhd' }));
    expect(head.ContentLength).toBe(8);
  });

  it('--prune deletes a target that left the YAML only if it said prune: true; the others stay where they are', async () => {
    await sb.yaml(`version: 1
images:
  os:
    path: $DIR/img/os.qcow2
    source: { url: ${www.url}/os.qcow2.xz, checksumUrl: ${www.url}/SHA256SUMS }
  azure-disk: { path: $DIR/img/os.vhd, format: vhd, vhd: { subformat: fixed }, source: { image: os } }
  data: { path: $DIR/img/data.qcow2, size: 16M, source: { directory: $DIR/tree } }
`);
    const plan = await sb.run('plan');
    expect(plan.stdout).toMatch(/gs:\/\/vr-pub\/gcs\/data\.qcow2 \(published from images\.data\) left the YAML; `apply --prune` deletes it/);
    expect(plan.stdout).toMatch(/s3:\/\/vr-pub\/exports\/os\.vhd \(published from images\.azure-disk\) left the YAML; it is left where it is \(prune: false\)/);
    const r = await sb.run('apply', '--prune');
    expect(r.code, r.stdout + r.stderr).toBe(0);
    await expect(s3c.send(new HeadObjectCommand({ Bucket: BUCKET, Key: 'gcs/data.qcow2' }))).rejects.toThrow();
    expect((await s3c.send(new HeadObjectCommand({ Bucket: BUCKET, Key: 'exports/os.vhd' }))).ContentLength).toBeGreaterThan(0);
    expect((await container().getBlobClient('os.vhd').getProperties()).blobType).toBe('PageBlob');
    expect((await sb.run('plan')).stdout).toMatch(/No changes/);
  });
});

describe('publish, interrupted', () => {
  it('an upload killed after the pages went up but before the digest is uploaded again by the next apply (the half object is ours, not refused)', async () => {
    await sb.yaml(`version: 1
images:
  half: { path: $DIR/img/half.vhd, format: vhd, size: 4M, vhd: { subformat: fixed }, publish: [{ to: "azure://${az.account}/images/half.vhd", credentialsFile: $DIR/azure }] }
`);
    const { cli } = await import('./helpers.js');
    const killed = await cli(['apply', '-f', p('storage.yaml'), '--state-dir', sb.stateDir], { VIRT_RECONCILE_FAILPOINT: 'publish-pages-written' });
    expect(killed.code).toBe(-1);
    const blob = container().getBlobClient('half.vhd');
    expect((await blob.getProperties()).metadata?.virtreconcilesha256).toBeUndefined();
    const r = await sb.run('apply');
    expect(r.code, r.stdout + r.stderr).toBe(0);
    expect((await blob.getProperties()).metadata?.virtreconcilesha256).toBe(await sha256(p('img/half.vhd')));
  });
});

describe('publish, resumed', () => {
  it('a page-blob upload killed after a checkpoint goes on from there at the next apply, and the blob is the whole image', async () => {
    await execa('dd', ['if=/dev/urandom', `of=${p('big.raw')}`, 'bs=1M', 'count=80', 'status=none']);
    await sb.yaml(`version: 1
images:
  big: { path: $DIR/img/big.vhd, format: vhd, vhd: { subformat: fixed }, source: { file: $DIR/big.raw }, publish: [{ to: "azure://${az.account}/images/big.vhd", credentialsFile: $DIR/azure }] }
`);
    const { cli } = await import('./helpers.js');
    const killed = await cli(['apply', '-f', p('storage.yaml'), '--state-dir', sb.stateDir], { VIRT_RECONCILE_FAILPOINT: 'publish-page-checkpoint' });
    expect(killed.code).toBe(-1);
    const r = await sb.run('apply');
    expect(r.code, r.stdout + r.stderr).toBe(0);
    expect(r.stdout).toMatch(/publish:azure:\/\/\S+\/images\/big\.vhd: resumed the interrupted upload \(at 67108864 bytes\)/);
    const blob = container().getBlobClient('big.vhd');
    const want = await sha256(p('img/big.vhd'));
    expect((await blob.getProperties()).metadata?.virtreconcilesha256).toBe(want);
    expect(await blobSha256(blob)).toBe(want);
  });
});

describe('publish: block blobs', () => {
  it('a block-blob upload killed after a block was staged sends only the other blocks at the next apply, and nothing is at the target before the commit', async () => {
    await execa('dd', ['if=/dev/urandom', `of=${p('azbig.raw')}`, 'bs=1M', 'count=36', 'status=none']);
    await sb.yaml(`version: 1
images:
  azbig: { path: $DIR/img/azbig.img, format: raw, source: { file: $DIR/azbig.raw }, publish: [{ to: "azure://${az.account}/images/blocks/azbig.img", credentialsFile: $DIR/azure }] }
`);
    const { cli } = await import('./helpers.js');
    const killed = await cli(['apply', '-f', p('storage.yaml'), '--state-dir', sb.stateDir], { VIRT_RECONCILE_FAILPOINT: 'publish-block-staged' });
    expect(killed.code).toBe(-1);
    const blob = container().getBlockBlobClient('blocks/azbig.img');
    expect(await blob.exists()).toBe(false);
    const staged = (await blob.getBlockList('uncommitted')).uncommittedBlocks ?? [];
    expect(staged.length).toBeGreaterThan(0);
    const r = await sb.run('apply');
    expect(r.code, r.stdout + r.stderr).toBe(0);
    expect(r.stdout).toMatch(/publish:azure:\/\/\S+\/images\/blocks\/azbig\.img: resumed the interrupted upload \([1-4] of 5 block\(s\) were staged\)/);
    const want = await sha256(p('img/azbig.img'));
    expect((await blob.getProperties()).metadata?.virtreconcilesha256).toBe(want);
    expect(await blobSha256(blob)).toBe(want);
    expect((await blob.getBlockList('committed')).committedBlocks?.length).toBe(5);
  });
});

describe('publish: block blobs under foreign uncommitted blocks (adversarial pass)', () => {
  it('clearing blocks staged under IDs of another length leaves the published blob as it was if the upload stops', async () => {
    const { azurePlace } = await import('../src/publish/azure.js');
    const blob = container().getBlockBlobClient('keep/x.img');
    await container().createIfNotExists();
    // The previous image as reconcile commits one: staged blocks.
    await blob.stageBlock(Buffer.from('prev-block-0000').toString('base64'), Buffer.from('previous image'), 14);
    await blob.commitBlockList([Buffer.from('prev-block-0000').toString('base64')], { metadata: { virtreconcilesha256: 'a'.repeat(64) } });
    await blob.stageBlock(Buffer.from('abcd').toString('base64'), Buffer.from('foreign'), 7);
    await writeFile(p('x.img'), Buffer.alloc(1024 * 1024, 1));
    const t = {
      to: `azure://${az.account}/images/keep/x.img`,
      place: { kind: 'azure' as const, url: `azure://${az.account}/images/keep`, account: az.account, container: 'images', prefix: 'keep/x.img', credentialsFile: p('azure') },
      pageBlob: false,
      prune: false,
      origin: 'x:1:1',
    };
    const ac = new AbortController();
    await expect((await azurePlace(t)).put(p('x.img'), 'b'.repeat(64), { signal: ac.signal, onProgress: () => ac.abort() })).rejects.toThrow();
    expect((await blob.downloadToBuffer()).toString()).toBe('previous image');
    expect((await blob.getProperties()).metadata?.virtreconcilesha256).toBe('a'.repeat(64));
  });
});

describe('publish: whose object it is (adversarial pass)', () => {
  const one = (key: string, image = 'own', file = 'own') => `version: 1
images:
  ${image}: { path: $DIR/img/${file}.qcow2, size: 8M, publish: [{ to: "s3://${BUCKET}/${key}", endpoint: "${s3.endpoint}", credentialsFile: $DIR/aws }] }
`;
  const body = async (key: string) => (await s3c.send(new GetObjectCommand({ Bucket: BUCKET, Key: key }))).Body!.transformToString();

  it("someone else's object at a new image's target is refused at every apply: a refusal or a failure never makes it reconcile's", async () => {
    await s3c.send(new PutObjectCommand({ Bucket: BUCKET, Key: 'colleague/a.qcow2', Body: "COLLEAGUE'S" }));
    await sb.yaml(one('colleague/a.qcow2'));
    for (let i = 0; i < 2; i++) {
      const r = await sb.run('apply');
      expect(r.code).toBe(1);
      expect(r.stdout + r.stderr).toMatch(/an object reconcile did not publish is at s3:\/\/vr-pub\/colleague\/a\.qcow2/);
    }
    expect(await body('colleague/a.qcow2')).toBe("COLLEAGUE'S");
  });

  it('an object replaced by someone after reconcile uploaded it, or uploaded from another state directory, is left alone', async () => {
    await sb.yaml(one('mine/b.qcow2', 'mine', 'mine'));
    expect((await sb.run('apply')).code).toBe(0);
    await s3c.send(new PutObjectCommand({ Bucket: BUCKET, Key: 'mine/b.qcow2', Body: 'REPLACED BY SOMEONE' }));
    await execa('qemu-io', ['-f', 'qcow2', '-c', 'write -P 0x11 0 64k', p('img/mine.qcow2')]);
    const plan = await sb.run('plan');
    expect(plan.code, plan.stdout + plan.stderr).toBe(1);
    expect(plan.stdout + plan.stderr).toMatch(/an object reconcile did not publish is at s3:\/\/vr-pub\/mine\/b\.qcow2 \(19 bytes, without its digest\)/);
    expect(await body('mine/b.qcow2')).toBe('REPLACED BY SOMEONE');
    // Another state directory (another host) publishing its own image to the same key.
    const other = await sandbox('publish-other');
    try {
      // (another size: two blank images of one size are the same bytes, and so the same upload)
      await other.yaml(one('mine/b.qcow2', 'theirs', 'theirs').replaceAll('$DIR/aws', p('aws')).replace('size: 8M', 'size: 16M'));
      await s3c.send(new DeleteObjectCommand({ Bucket: BUCKET, Key: 'mine/b.qcow2' }));
      expect((await other.run('apply')).code).toBe(0);
      const r = await sb.run('apply');
      expect(r.code, r.stdout + r.stderr).toBe(1);
      expect(r.stdout + r.stderr).toMatch(
        /s3:\/\/vr-pub\/mine\/b\.qcow2 holds an upload this state directory did not make \(sha256 \w+…: another host's, or another state directory's\); it is left alone/,
      );
    } finally {
      await other.cleanup();
    }
  });
});

describe('publish, resumed on S3', () => {
  it('a multipart upload killed after a part goes on with the other parts at the next apply (the parts done are recorded)', async () => {
    await execa('dd', ['if=/dev/urandom', `of=${p('s3big.raw')}`, 'bs=1M', 'count=40', 'status=none']);
    await sb.yaml(`version: 1
images:
  s3big: { path: $DIR/img/s3big.img, format: raw, source: { file: $DIR/s3big.raw }, publish: [{ to: "s3://${BUCKET}/big/s3big.img", endpoint: "${s3.endpoint}", credentialsFile: $DIR/aws }] }
`);
    const { cli } = await import('./helpers.js');
    const killed = await cli(['apply', '-f', p('storage.yaml'), '--state-dir', sb.stateDir], { VIRT_RECONCILE_FAILPOINT: 'publish-part-uploaded' });
    expect(killed.code).toBe(-1);
    await expect(s3c.send(new HeadObjectCommand({ Bucket: BUCKET, Key: 'big/s3big.img' }))).rejects.toThrow();
    const r = await sb.run('apply');
    expect(r.code, r.stdout + r.stderr).toBe(0);
    expect(r.stdout).toMatch(/publish:s3:\/\/vr-pub\/big\/s3big\.img: resumed the interrupted upload \([1-3] part\(s\) were sent\)/);
    const obj = await s3c.send(new GetObjectCommand({ Bucket: BUCKET, Key: 'big/s3big.img' }));
    const got = createHash('sha256')
      .update(Buffer.from(await obj.Body!.transformToByteArray()))
      .digest('hex');
    expect(got).toBe(await sha256(p('img/s3big.img')));
    expect(obj.Metadata?.virtreconcilesha256).toBe(got);
  });
});
