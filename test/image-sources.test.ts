// Images from downloads and directories, through the CLI against a real HTTP server of the
// test's own (with and without Range, dropping connections, redirecting, asking for a token)
// and real mkfs tools; checked with qemu-img and debugfs, never with reconcile's own view.
import { createHash } from 'node:crypto';
import { chmod, chown, mkdir, readdir, readFile, rm, stat, writeFile } from 'node:fs/promises';
import path from 'node:path';
import { execa } from 'execa';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { allText, qemuImg, qemuInfo, sandbox, type Sandbox } from './helpers.js';
import { serve, type Served } from './http-helpers.js';

const MiB = 1024 * 1024;
const TOKEN = 'tok-3f9a1c77e2b5d04468';

/** The YAML of one raw image NAME.img in $DIR/DIR downloaded from big.raw (listed in CHECKSUM), the cache emptied so that it is downloaded again. */
async function bigDownload(www: Served, name: string, dir: string): Promise<string> {
  await rm(path.join(sb.stateDir, 'downloads'), { recursive: true, force: true });
  return sb.yaml(`version: 1\nimages:\n  ${name}: { path: $DIR/${dir}/${name}.img, format: raw, source: { url: ${www.url}/big.raw, checksumUrl: ${www.url}/CHECKSUM } }\n`);
}

const sha256 = async (f: string) =>
  createHash('sha256')
    .update(await readFile(f))
    .digest('hex');

let sb: Sandbox;
let files: string;
const p = (f: string) => path.join(sb.dir, f);

beforeAll(async () => {
  sb = await sandbox('sources');
  files = p('www');
  await mkdir(files);
  // A small qcow2 with known data, compressed four ways.
  await qemuImg('create', '-q', '-f', 'raw', p('data.raw'), '8M');
  await execa('qemu-io', ['-f', 'raw', '-c', 'write -P 0xab 1M 1M', '-c', 'write -P 0x3c 5M 512K', p('data.raw')]);
  await qemuImg('convert', '-O', 'qcow2', p('data.raw'), path.join(files, 'disk.qcow2'));
  // xz (and its own Range-less server), gzip, zstd, bzip2
  await execa('xz', ['-k', '-0', path.join(files, 'disk.qcow2')]);
  await execa('gzip', ['-k', path.join(files, 'disk.qcow2')]);
  await execa('zstd', ['-q', '-k', path.join(files, 'disk.qcow2')]);
  await execa('bzip2', ['-k', path.join(files, 'disk.qcow2')]);
  // Random data makes a download large enough to be interrupted and to show progress.
  await execa('dd', ['if=/dev/urandom', `of=${p('big.raw')}`, 'bs=1M', 'count=12', 'status=none']);
  await writeFile(path.join(files, 'big.raw'), await readFile(p('big.raw')));
  const sums = [];
  for (const f of ['disk.qcow2.xz', 'disk.qcow2.gz', 'disk.qcow2.zst']) sums.push(`${await sha256(path.join(files, f))}  ${f}`);
  await writeFile(path.join(files, 'SHA256SUMS'), `${sums.join('\n')}\n`);
  // BSD form, inside a PGP clear signature as Fedora publishes it.
  await writeFile(
    path.join(files, 'CHECKSUM'),
    `-----BEGIN PGP SIGNED MESSAGE-----\nHash: SHA256\n\n# disk.qcow2.bz2: 1 bytes\nSHA256 (disk.qcow2.bz2) = ${await sha256(path.join(files, 'disk.qcow2.bz2'))}\nSHA256 (big.raw) = ${await sha256(path.join(files, 'big.raw'))}\n-----BEGIN PGP SIGNATURE-----\nxyz\n-----END PGP SIGNATURE-----\n`,
  );
});

afterAll(async () => {
  await sb?.cleanup();
});

describe('source.url', () => {
  it('downloads (resuming with Range after a dropped connection), checks against SHA256SUMS, decompresses and converts; a second image and a second apply download nothing', async () => {
    const www = await serve(files, { range: true, dropAfter: 100_000 });
    try {
      await sb.yaml(`version: 1
images:
  a: { path: $DIR/out/a.qcow2, size: 16M, source: { url: ${www.url}/disk.qcow2.xz, checksumUrl: ${www.url}/SHA256SUMS } }
  b: { path: $DIR/out/b.img, format: raw, source: { url: ${www.url}/disk.qcow2.xz, checksumUrl: ${www.url}/SHA256SUMS } }
`);
      // The xz file is small: drop it inside.
      www.opts.dropAfter = Math.floor((await stat(path.join(files, 'disk.qcow2.xz'))).size / 2);
      const r = await sb.run('apply');
      expect(r.code, r.stdout + r.stderr).toBe(0);
      expect(r.stdout).toMatch(/images\.a: GET http:\/\/127\.0\.0\.1:\d+\/disk\.qcow2\.xz: the connection (broke|ended) after \d+/);
      const gets = www.requests.filter((q) => q.path === '/disk.qcow2.xz');
      expect(gets.length).toBe(2);
      expect(gets[1]!.range).toMatch(/^bytes=\d+-$/);
      const a = await qemuInfo(p('out/a.qcow2'));
      expect(a.format).toBe('qcow2');
      expect(a['virtual-size']).toBe(16 * MiB);
      await qemuImg('compare', '-f', 'raw', '-F', 'qcow2', p('data.raw'), p('out/a.qcow2'));
      expect((await qemuInfo(p('out/b.img'))).format).toBe('raw');
      await qemuImg('compare', '-f', 'raw', '-F', 'raw', p('data.raw'), p('out/b.img'));
      // Cached under its digest, as downloaded.
      const digest = await sha256(path.join(files, 'disk.qcow2.xz'));
      expect(await readdir(path.join(sb.stateDir, 'downloads'))).toEqual([`sha256-${digest}`]);
      www.requests.length = 0;
      const again = await sb.run('apply');
      expect(again.stdout).toMatch(/No changes/);
      expect(www.requests.filter((q) => q.path === '/disk.qcow2.xz')).toEqual([]);
    } finally {
      await www.close();
    }
  });

  it('servers without Range and without Content-Length: fetched whole again after a drop; gzip, zstd and bzip2, and a BSD checksum list', async () => {
    const www = await serve(files, { range: false, lengthless: true, dropAfter: 20_000 });
    try {
      await sb.yaml(`version: 1
images:
  gz: { path: $DIR/out2/gz.qcow2, source: { url: ${www.url}/disk.qcow2.gz, checksumUrl: ${www.url}/SHA256SUMS } }
  zst: { path: $DIR/out2/zst.qcow2, source: { url: ${www.url}/disk.qcow2.zst, checksumUrl: ${www.url}/SHA256SUMS } }
  bz: { path: $DIR/out2/bz.vmdk, format: vmdk, source: { url: ${www.url}/disk.qcow2.bz2, checksumUrl: ${www.url}/CHECKSUM } }
  big: { path: $DIR/out2/big.img, format: raw, source: { url: ${www.url}/big.raw, checksumUrl: ${www.url}/CHECKSUM } }
`);
      const r = await sb.run('apply', '--parallelism', '1');
      expect(r.code, r.stdout + r.stderr).toBe(0);
      expect(r.stdout).toMatch(/does not resume downloads \(no Range support\); fetching it whole again/);
      for (const [f, fmt] of [
        ['gz.qcow2', 'qcow2'],
        ['zst.qcow2', 'qcow2'],
        ['bz.vmdk', 'vmdk'],
      ])
        await qemuImg('compare', '-f', 'raw', '-F', fmt!, p('data.raw'), p(`out2/${f}`));
      await qemuImg('compare', '-f', 'raw', '-F', 'raw', p('big.raw'), p('out2/big.img'));
    } finally {
      await www.close();
    }
  });

  it('a checksum mismatch names both digests, creates nothing under the declared name and keeps nothing in the cache', async () => {
    const www = await serve(files, { range: true });
    try {
      const wrong = 'ab'.repeat(32);
      await sb.yaml(`version: 1
images:
  bad: { path: $DIR/out3/bad.qcow2, source: { url: ${www.url}/disk.qcow2.gz, sha256: ${wrong} } }
`);
      const r = await sb.run('apply');
      expect(r.code).toBe(1);
      const actual = await sha256(path.join(files, 'disk.qcow2.gz'));
      expect(r.stdout + r.stderr).toContain(`checksum mismatch: expected sha256 ${wrong} (source.sha256), downloaded ${actual}`);
      expect(await readdir(p('out3')).catch(() => [])).toEqual([]);
      // (the file's own digest is cached by the test before: it was downloaded whole and right there)
      expect((await readdir(path.join(sb.stateDir, 'downloads'))).filter((n) => n.includes(wrong) || n.endsWith('.partial') || n.endsWith('.json'))).toEqual([]);
      // A list that does not name the file: refused at plan time, naming it.
      await sb.yaml(`version: 1
images:
  bad: { path: $DIR/out3/bad.qcow2, source: { url: ${www.url}/other.qcow2, checksumUrl: ${www.url}/SHA256SUMS } }
`);
      const plan = await sb.run('plan');
      expect(plan.code).toBe(1);
      expect(plan.stdout + plan.stderr).toMatch(/images\.bad: .*storage\.yaml:3:\d+: checksumUrl http:\/\/127\.0\.0\.1:\d+\/SHA256SUMS lists no SHA-256 for other\.qcow2/);
    } finally {
      await www.close();
    }
  });

  it('a bearer token from a file goes to the server, not across a redirect to another origin, and is printed nowhere', async () => {
    const origin = await serve(files, { range: true, token: TOKEN });
    // The redirecting server is another origin (port): the token must not follow the redirect.
    const front = await serve(files, { range: true, redirectTo: origin.url });
    try {
      await writeFile(p('token'), `${TOKEN}\n`, { mode: 0o600 });
      const digest = await sha256(path.join(files, 'disk.qcow2.zst'));
      await sb.yaml(`version: 1
images:
  tok: { path: $DIR/out4/tok.qcow2, source: { url: ${origin.url}/disk.qcow2.zst, sha256: ${digest}, auth: { bearerTokenFile: $DIR/token } } }
  redir: { path: $DIR/out4/redir.qcow2, source: { url: ${front.url}/r/disk.qcow2.xz, sha256: ${await sha256(path.join(files, 'disk.qcow2.xz'))}, auth: { bearerTokenFile: $DIR/token } } }
`);
      // Cached from the first test: clear it, so both are fetched.
      await rm(path.join(sb.stateDir, 'downloads'), { recursive: true, force: true });
      const r = await sb.run('apply');
      expect(origin.requests.find((q) => q.path === '/disk.qcow2.zst')?.auth).toBe(`Bearer ${TOKEN}`);
      expect(front.requests.find((q) => q.path === '/r/disk.qcow2.xz')?.auth).toBe(`Bearer ${TOKEN}`);
      // Redirected to the other origin without the token: refused there (401), so the apply fails.
      expect(origin.requests.find((q) => q.path === '/disk.qcow2.xz')?.auth).toBeUndefined();
      expect(r.code).toBe(1);
      expect(r.stdout + r.stderr).toMatch(new RegExp(`images\\.redir: FAILED: GET ${origin.url.replace(/\./g, '\\.')}/disk\\.qcow2\\.xz: HTTP 401`));
      await qemuImg('compare', '-f', 'raw', '-F', 'qcow2', p('data.raw'), p('out4/tok.qcow2'));
      for (const t of [r.stdout, r.stderr, await allText(sb.stateDir), (await sb.run('plan')).stdout]) expect(t).not.toContain(TOKEN);
    } finally {
      await origin.close();
      await front.close();
    }
  });

  it('shows progress: a line every interval in a pipe, a live line on a terminal, nothing with --quiet', async () => {
    const www = await serve(files, { range: true, slowMs: 15 });
    try {
      await bigDownload(www, 'slow', 'out5');
      const piped = await sb.run('apply', '--quiet');
      expect(piped.code, piped.stderr).toBe(0);
      expect(piped.stdout + piped.stderr).not.toMatch(/still downloading/);
      await rm(p('out5'), { recursive: true });
      await rm(path.join(sb.stateDir, 'downloads'), { recursive: true, force: true });
      const { cli } = await import('./helpers.js');
      const lines = await cli(['apply', '-f', p('storage.yaml'), '--state-dir', sb.stateDir], { VIRT_RECONCILE_PROGRESS_EVERY_MS: '1000' });
      expect(lines.code, lines.stderr).toBe(0);
      expect(lines.stdout).toMatch(/still downloading images\.slow: \d+% \(\d+\.\d MiB of 12\.0 MiB, [\d.]+ (KiB|MiB)\/s\) \[\d+s elapsed\]/);
      await rm(p('out5'), { recursive: true });
      await rm(path.join(sb.stateDir, 'downloads'), { recursive: true, force: true });
      const tty = await sb.runInTerminal('', 'apply');
      expect(tty.code, tty.stdout).toBe(0);
      expect(tty.stdout).toMatch(/downloading images\.slow \[[#-]{20}\] \d+% \(/);
    } finally {
      await www.close();
    }
  });
});

describe('source.directory', () => {
  it('makes an ext4 image of the directory (owners and modes kept); unchanged content is a no-op, a change is a replace that needs --allow-replace unless rebuild: onChange', async () => {
    const tree = p('tree');
    await mkdir(path.join(tree, 'etc'), { recursive: true });
    await writeFile(path.join(tree, 'etc', 'app.conf'), 'port = 8080\n');
    await chown(path.join(tree, 'etc', 'app.conf'), 1234, 55);
    await chmod(path.join(tree, 'etc', 'app.conf'), 0o640);
    await writeFile(path.join(tree, 'run.sh'), '#!/bin/sh\n');
    await chmod(path.join(tree, 'run.sh'), 0o4755);
    await sb.yaml(`version: 1
images:
  root: { path: $DIR/fs/root.qcow2, size: 32M, source: { directory: $DIR/tree } }
`);
    const r = await sb.run('apply');
    expect(r.code, r.stdout + r.stderr).toBe(0);
    await qemuImg('convert', '-O', 'raw', p('fs/root.qcow2'), p('root.raw'));
    const st = (await execa('debugfs', ['-R', 'stat /etc/app.conf', p('root.raw')])).stdout;
    expect(st).toMatch(/Mode:\s+0640/);
    expect(st).toMatch(/User:\s+1234\s+Group:\s+55/);
    expect((await execa('debugfs', ['-R', 'stat /run.sh', p('root.raw')])).stdout).toMatch(/Mode:\s+04755/);
    expect((await execa('debugfs', ['-R', 'cat /etc/app.conf', p('root.raw')])).stdout).toBe('port = 8080');
    await sb.resetTrace();
    // Touched, not changed: nothing to do, and no mkfs.
    const now = new Date();
    await import('node:fs/promises').then((fs) => fs.utimes(path.join(tree, 'run.sh'), now, now));
    expect((await sb.run('apply')).stdout).toMatch(/No changes/);
    expect((await sb.spawned()).filter((a) => a[0]!.startsWith('mkfs'))).toEqual([]);
    await writeFile(path.join(tree, 'etc', 'app.conf'), 'port = 9090\n');
    const refused = await sb.run('apply');
    expect(refused.code).toBe(1);
    expect(refused.stdout + refused.stderr).toMatch(/fs\/root\.qcow2 must be rebuilt \(source directory:sha256:\w+ -> directory:sha256:\w+\); .*--allow-replace/);
    await sb.yaml(`version: 1
images:
  root: { path: $DIR/fs/root.qcow2, size: 32M, source: { directory: $DIR/tree }, rebuild: onChange }
`);
    const rebuilt = await sb.run('apply');
    expect(rebuilt.code, rebuilt.stdout + rebuilt.stderr).toBe(0);
    expect(rebuilt.stdout).toMatch(/images\.root: replacing \(its directory changed \(rebuild: onChange\)\)/);
    await qemuImg('convert', '-O', 'raw', p('fs/root.qcow2'), p('root2.raw'));
    expect((await execa('debugfs', ['-R', 'cat /etc/app.conf', p('root2.raw')])).stdout).toBe('port = 9090');
  });

  it('xfs and btrfs images of a directory; xfs refuses names with white space at plan time', async () => {
    const tree = p('tree2');
    await mkdir(path.join(tree, 'd'), { recursive: true });
    await writeFile(path.join(tree, 'd', 'f'), 'xfs and btrfs\n');
    await chown(path.join(tree, 'd', 'f'), 4321, 77);
    await sb.yaml(`version: 1
images:
  x: { path: $DIR/fs2/x.img, format: raw, size: 320M, filesystem: xfs, source: { directory: $DIR/tree2 } }
  b: { path: $DIR/fs2/b.qcow2, size: 128M, filesystem: btrfs, source: { directory: $DIR/tree2 } }
`);
    const r = await sb.run('apply');
    expect(r.code, r.stdout + r.stderr).toBe(0);
    const blkid = async (f: string) => (await execa('blkid', ['-p', '-o', 'value', '-s', 'TYPE', f])).stdout.trim();
    expect(await blkid(p('fs2/x.img'))).toBe('xfs');
    const xfsLs = (await execa('xfs_db', ['-r', '-c', 'path /d/f', '-c', 'print core.uid core.gid core.mode', p('fs2/x.img')])).stdout;
    expect(xfsLs).toMatch(/core\.uid = 4321/);
    expect(xfsLs).toMatch(/core\.gid = 77/);
    await qemuImg('convert', '-O', 'raw', p('fs2/b.qcow2'), p('b.raw'));
    expect(await blkid(p('b.raw'))).toBe('btrfs');
    await writeFile(path.join(tree, 'with space'), 'x');
    const plan = await sb.run('plan');
    expect(plan.code).toBe(1);
    expect(plan.stdout + plan.stderr).toMatch(
      /images\.x: .*holds names with white space \(with space\), or named "\$", which mkfs\.xfs cannot copy from a directory; use ext4 or btrfs/,
    );
  });
});

describe('source.url, interrupted', () => {
  it('an apply killed (kill -9) mid-download leaves its half in the cache, and the next apply resumes it with Range', async () => {
    const www = await serve(files, { range: true, slowMs: 20 });
    try {
      await bigDownload(www, 'killed', 'out6');
      const run = sb.start('apply');
      const digest = await sha256(path.join(files, 'big.raw'));
      const partial = path.join(sb.stateDir, 'downloads', `sha256-${digest}.partial`);
      const { waitFor } = await import('./helpers.js');
      await waitFor(async () => ((await stat(partial).catch(() => undefined))?.size ?? 0) > 2 * MiB, 'half the download', 60_000);
      process.kill(-run.child.pid!, 'SIGKILL');
      await run.exited;
      const had = (await stat(partial)).size;
      // Nothing under the declared name (the killed build's private directory goes with the next apply).
      expect((await readdir(p('out6')).catch(() => [] as string[])).filter((n) => n === 'killed.img')).toEqual([]);
      www.requests.length = 0;
      www.opts.slowMs = 0;
      const r = await sb.run('apply');
      expect(r.code, r.stdout + r.stderr).toBe(0);
      const get = www.requests.find((q) => q.path === '/big.raw');
      expect(Number(/^bytes=(\d+)-$/.exec(get?.range ?? '')?.[1])).toBeGreaterThanOrEqual(had);
      await qemuImg('compare', '-f', 'raw', '-F', 'raw', p('big.raw'), p('out6/killed.img'));
      expect((await readdir(path.join(sb.stateDir, 'downloads'))).filter((n) => n.includes('.partial'))).toEqual([]);
      expect(await readdir(p('out6'))).toEqual(['killed.img']);
    } finally {
      await www.close();
    }
  });
});

describe('progress in the watch service', () => {
  it('a download under way is in /status (operations) and on the page, and in the log every interval', async () => {
    const www = await serve(files, { range: true, slowMs: 40 });
    const { startWatch, until } = await import('./watch-helpers.js');
    try {
      const conf = await bigDownload(www, 'watched', 'out7');
      process.env.VIRT_RECONCILE_PROGRESS_EVERY_MS = '1000';
      const w = await startWatch(sb, ['-f', conf, '--interval', '1m']);
      delete process.env.VIRT_RECONCILE_PROGRESS_EVERY_MS;
      try {
        const op = await until(
          async () =>
            ((await w.status()).operations as { id: string; what: string; progress: string }[] | undefined)?.find((o) => o.what === 'downloading' && /^\d+% \(/.test(o.progress)),
          'the download (its size known: read before its first bytes it has none) in /status',
          60_000,
        );
        expect(op.id).toBe('images.watched');
        expect(op.progress).toMatch(/^\d+% \(/);
        expect(await (await fetch(`${w.url}/`)).text()).toMatch(/Under way[\s\S]*images\.watched[\s\S]*downloading/);
        await until(async () => /still downloading images\.watched: \d+%/.test(w.log()), 'a progress line in the log', 30_000);
      } finally {
        w.proc.kill('SIGTERM');
        await w.exit();
      }
    } finally {
      await www.close();
    }
  });
});

describe('source.url, hostile or awkward downloads (adversarial pass)', () => {
  it('a vmdk whose only extent is another file of the host (/etc/shadow) is refused, and nothing is created', async () => {
    const www = await serve(files, { range: true });
    try {
      await writeFile(
        path.join(files, 'evil.vmdk'),
        '# Disk DescriptorFile\nversion=1\nCID=12345678\nparentCID=ffffffff\ncreateType="monolithicFlat"\nRW 8 FLAT "/etc/shadow" 0\n',
      );
      await execa('xz', ['-k', '-0', '-f', path.join(files, 'evil.vmdk')]);
      await sb.yaml(`version: 1
images:
  evil: { path: $DIR/out8/evil.img, format: raw, source: { url: ${www.url}/evil.vmdk.xz, sha256: ${await sha256(path.join(files, 'evil.vmdk.xz'))} } }
`);
      const r = await sb.run('apply');
      expect(r.code).toBe(1);
      expect(r.stdout + r.stderr).toMatch(/the downloaded vmdk image refers to other files \(\/etc\/shadow\); only self-contained images are used/);
      expect((await readdir(p('out8')).catch(() => [] as string[])).filter((n) => !n.startsWith('.'))).toEqual([]);
    } finally {
      await www.close();
    }
  });

  it('decompresses far more than 100 MB (nothing buffered in memory), and a .gz sent with Content-Encoding: gzip arrives as the file', async () => {
    const www = await serve(files, { range: true, gzipEncoding: true });
    try {
      await execa('sh', ['-c', `head -c 160M /dev/zero | zstd -q -1 -o ${path.join(files, 'zeros.raw.zst')}`]);
      await writeFile(
        path.join(files, 'ENC'),
        `${await sha256(path.join(files, 'zeros.raw.zst'))}  zeros.raw.zst\n${await sha256(path.join(files, 'disk.qcow2.gz'))}  disk.qcow2.gz\n`,
      );
      await sb.yaml(`version: 1
images:
  zeros: { path: $DIR/out9/zeros.qcow2, source: { url: ${www.url}/zeros.raw.zst, checksumUrl: ${www.url}/ENC } }
  enc: { path: $DIR/out9/enc.qcow2, source: { url: ${www.url}/disk.qcow2.gz, checksumUrl: ${www.url}/ENC } }
`);
      await rm(path.join(sb.stateDir, 'downloads'), { recursive: true, force: true });
      const r = await sb.run('apply');
      expect(r.code, r.stdout + r.stderr).toBe(0);
      expect((await qemuInfo(p('out9/zeros.qcow2')))['virtual-size']).toBe(160 * MiB);
      await qemuImg('compare', '-f', 'raw', '-F', 'qcow2', p('data.raw'), p('out9/enc.qcow2'));
    } finally {
      await www.close();
    }
  });
});

describe('source.url, Ctrl-C', () => {
  it('a Ctrl-C during a download cancels it (not a failure), keeps the half for the next apply', async () => {
    const www = await serve(files, { range: true, slowMs: 30 });
    try {
      await bigDownload(www, 'ctrlc', 'out10');
      const run = sb.start('apply');
      const digest = await sha256(path.join(files, 'big.raw'));
      const { waitFor } = await import('./helpers.js');
      await waitFor(
        async () => ((await stat(path.join(sb.stateDir, 'downloads', `sha256-${digest}.partial`)).catch(() => undefined))?.size ?? 0) > MiB,
        'a part of the download',
        60_000,
      );
      run.interrupt();
      expect(await run.exited).toBe(130);
      expect(run.stdout()).toMatch(/images\.ctrlc: cancelled \(shutting down\)/);
      expect(run.stdout()).not.toMatch(/FAILED/);
      expect((await stat(path.join(sb.stateDir, 'downloads', `sha256-${digest}.partial`))).size).toBeGreaterThan(MiB);
    } finally {
      await www.close();
    }
  });
});
