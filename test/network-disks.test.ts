// VM disks QEMU reads over the network (<disk type='network'>), against servers the test starts
// on 127.0.0.1: qemu-nbd, a tgtd that requires CHAP (the login secret is a declared secret),
// and an HTTP server with Range support (read-only). The domain is started: QEMU connecting to
// all three is the proof. rbd, which needs a Ceph cluster, is checked as XML.
import { spawn, type ChildProcess } from 'node:child_process';
import { createReadStream } from 'node:fs';
import { chmod, stat, writeFile } from 'node:fs/promises';
import { createServer, type Server } from 'node:http';
import type { AddressInfo } from 'node:net';
import path from 'node:path';
import { execa } from 'execa';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { startPrivateLibvirtd, type PrivateLibvirtd } from '../src/dev/private-libvirtd.js';
import { diskOf, sandbox, startTgtd, virsh, waitFor, type Sandbox, type Tgtd } from './helpers.js';

let lv: PrivateLibvirtd;
let sb: Sandbox;
const p = (f: string) => path.join(sb.dir, f);
const children: ChildProcess[] = [];
let http: Server | undefined;
const nbdPort = 10809 + 31 + (process.pid % 200);
let iscsiPort = 0;
let tgtd: Tgtd | undefined;
let httpPort = 0;

/** A static file server that answers Range requests, as QEMU's curl driver needs. */
function serve(file: string): Promise<number> {
  http = createServer(async (req, res) => {
    const size = (await stat(file)).size;
    const m = /^bytes=(\d+)-(\d*)$/.exec(req.headers.range ?? '');
    const start = m ? Number(m[1]) : 0;
    const end = m?.[2] ? Math.min(Number(m[2]), size - 1) : size - 1;
    res.writeHead(m ? 206 : 200, {
      'Accept-Ranges': 'bytes',
      'Content-Length': end - start + 1,
      ...(m ? { 'Content-Range': `bytes ${start}-${end}/${size}` } : {}),
    });
    if (req.method === 'HEAD') return void res.end();
    createReadStream(file, { start, end }).pipe(res);
  });
  return new Promise((resolve) => http!.listen(0, '127.0.0.1', () => resolve((http!.address() as AddressInfo).port)));
}

beforeAll(async () => {
  lv = await startPrivateLibvirtd();
  sb = await sandbox('netdisks', { libvirt: lv });
  await chmod(sb.dir, 0o755);
  for (const f of ['nbd.raw', 'lun.raw', 'web.raw']) await execa('truncate', ['-s', '16M', p(f)]);
  children.push(spawn('qemu-nbd', ['-f', 'raw', '-x', 'data', '-b', '127.0.0.1', '-p', String(nbdPort), '-t', p('nbd.raw')], { stdio: 'ignore' }));
  tgtd = await startTgtd(431);
  iscsiPort = tgtd.port;
  await tgtd.target('iqn.2026-01.dev.test:disks', p('lun.raw'), { user: 'vm-user', password: 'disk-chap-pw' });
  httpPort = await serve(p('web.raw'));
  await waitFor(async () => (await execa('qemu-img', ['info', `nbd://127.0.0.1:${nbdPort}/data`], { reject: false })).exitCode === 0, 'qemu-nbd');
});
afterAll(async () => {
  for (const c of children) c.kill('SIGKILL');
  tgtd?.stop();
  http?.close();
  try {
    await lv?.stop();
  } finally {
    await sb?.cleanup();
  }
});

const yaml = (chapFile: string) => `version: 1
secrets:
  disk-chap: { usage: iscsi, target: iqn.2026-01.dev.test:disks, valueFile: $DIR/${chapFile} }
  ceph: { usage: ceph, name: client.vms secret, valueFile: $DIR/ceph.key }
vms:
  netvm:
    create: { memory: 64M, vcpus: 1 }
    disks:
      - network: { protocol: nbd, host: 127.0.0.1, port: ${nbdPort}, name: data }
        target: vda
      - network: { protocol: iscsi, host: 127.0.0.1, port: ${iscsiPort}, name: iqn.2026-01.dev.test:disks/1, auth: { username: vm-user, secret: disk-chap } }
      - network: { protocol: http, host: 127.0.0.1, port: ${httpPort}, name: /web.raw }
        device: cdrom
  cephvm:
    create: { memory: 64M, vcpus: 1 }
    disks:
      - network: { protocol: rbd, host: mon1.example, port: 6789, name: vms/disk1, auth: { username: vms, secret: ceph } }
      # Without a port: libvirt writes the protocol's default in, which is the same disk.
      - network: { protocol: nbd, host: nbd.example, name: e1 }
      - network: { protocol: https, host: images.example, name: /x.iso }
        device: cdrom
`;

describe('network disks', () => {
  it('are defined with their protocol, host, name and login secret; a second plan changes nothing', async () => {
    await writeFile(p('chap'), 'disk-chap-pw');
    await writeFile(p('ceph.key'), `${Buffer.from('ceph-key').toString('base64')}\n`);
    await sb.yaml(yaml('chap'));
    const r = await sb.run('apply');
    expect(r.code).toBe(0);
    const xml = await virsh(lv, 'dumpxml', '--inactive', 'netvm');
    expect(diskOf(xml, 'vda')).toMatch(/type='network'[\s\S]*<source protocol='nbd' name='data'>\s*<host name='127\.0\.0\.1' port='\d+'\/>/);
    expect(diskOf(xml, 'vdb')).toMatch(
      /<source protocol='iscsi' name='iqn\.2026-01\.dev\.test:disks\/1'>[\s\S]*<auth username='vm-user'>\s*<secret type='iscsi' usage='iqn\.2026-01\.dev\.test:disks'\/>/,
    );
    expect(diskOf(xml, 'sda')).toMatch(/device='cdrom'[\s\S]*<source protocol='http' name='\/web\.raw'>[\s\S]*<readonly\/>/);
    expect(diskOf(await virsh(lv, 'dumpxml', '--inactive', 'cephvm'), 'vda')).toMatch(
      /<source protocol='rbd' name='vms\/disk1'>\s*<host name='mon1\.example' port='6789'\/>\s*<auth username='vms'>\s*<secret type='ceph' usage='client\.vms secret'\/>/,
    );
    expect((await sb.run('plan')).stdout).toMatch(/No changes/);
  });

  it('the domain starts: QEMU reaches the nbd export, logs in to the iSCSI target with the secret, reads over http', async () => {
    await virsh(lv, 'start', 'netvm');
    try {
      const blk = await virsh(lv, 'domblklist', 'netvm');
      expect(blk).toMatch(/vda\s+data/);
      expect(blk).toMatch(/vdb\s+iqn\.2026-01\.dev\.test:disks\/1/);
      expect(blk).toMatch(/sda\s+\/web\.raw/);
      expect(await virsh(lv, 'domblkinfo', 'netvm', 'vdb')).toMatch(/Capacity:\s+16777216/);
    } finally {
      await virsh(lv, 'destroy', 'netvm');
    }
  });

  it('with a wrong CHAP value the domain cannot start; another export at a declared target is a source change', async () => {
    await writeFile(p('chap-wrong'), 'not-the-password');
    await sb.yaml(yaml('chap-wrong'));
    expect((await sb.run('apply')).code).toBe(0);
    const start = await virsh(lv, 'start', 'netvm').catch((e: Error) => e.message);
    expect(start).toMatch(/iscsi|login|authenticat|CHAP/i);
    await sb.yaml(yaml('chap').replace(`port: ${nbdPort}, name: data`, `port: ${nbdPort}, name: other`));
    const plan = await sb.run('plan');
    expect(plan.stdout).toMatch(new RegExp(`vda source: nbd://127\\.0\\.0\\.1:${nbdPort}/data -> nbd://127\\.0\\.0\\.1:${nbdPort}/other`));
  });
});
