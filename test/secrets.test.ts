// libvirt secrets as declared objects: defined private and persistent, their value set from a
// file and never printed, passed as an argument or stored; a changed file, description or
// usage reconciled; someone else's secret left alone unless adopted (then never undefined);
// and a secret that actually works: CHAP against a tgtd on 127.0.0.1 that requires it.
import { readFile, writeFile } from 'node:fs/promises';
import path from 'node:path';
import { execa } from 'execa';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { startPrivateLibvirtd, type PrivateLibvirtd } from '../src/dev/private-libvirtd.js';
import { allText, recorded, sandbox, startTgtd, virsh, type Sandbox, type Tgtd } from './helpers.js';

let lv: PrivateLibvirtd;
let sb: Sandbox;
const p = (f: string) => path.join(sb.dir, f);
const VALUE = 'Sekr1t-chap-Value-93';

beforeAll(async () => {
  lv = await startPrivateLibvirtd();
  sb = await sandbox('secrets', { libvirt: lv });
});
afterAll(async () => {
  try {
    await lv?.stop();
  } finally {
    await sb?.cleanup();
  }
});

/** The uuid of the secret with this usage id (from secret-list). */
async function uuidOf(usageId: string): Promise<string | undefined> {
  const line = (await virsh(lv, 'secret-list')).split('\n').find((l) => l.includes(usageId));
  return line?.trim().split(/\s+/)[0];
}

/** The value libvirt holds (this libvirt keeps it base64-encoded in its secrets directory, readable by root). */
async function storedValue(uuid: string): Promise<string> {
  return Buffer.from(await readFile(path.join(lv.base, 'etc', 'secrets', `${uuid}.base64`), 'utf8'), 'base64').toString();
}

const SECRETS = `version: 1
secrets:
  chap: { usage: iscsi, target: iqn.2026-01.dev.test:store, description: CHAP of store, valueFile: $DIR/chap.txt }
  ceph-admin: { usage: ceph, name: client.admin secret, valueFile: $DIR/ceph.key }
  disk-key: { usage: volume, volume: /var/lib/libvirt/images/enc.qcow2, valueFile: $DIR/chap.txt }
  spice: { usage: tls, valueFile: $DIR/chap.txt }
  tpm: { usage: vtpm, valueFile: $DIR/chap.txt }
`;

describe('secrets', () => {
  it('are defined private and persistent, with values from their files; no value in output, state or any argument', async () => {
    await writeFile(p('chap.txt'), VALUE);
    // A Ceph key as `ceph auth get-key` prints it: base64, decoded into the secret's value.
    await writeFile(p('ceph.key'), `${Buffer.from('ceph-raw-key').toString('base64')}\n`);
    await sb.yaml(SECRETS);
    await sb.resetTrace();
    const plan = await sb.run('plan', '-o', 'json');
    const r = await sb.run('apply');
    expect(r.code).toBe(0);
    expect(r.stdout).toMatch(/Apply complete: 5 created/);
    const chap = (await uuidOf('iqn.2026-01.dev.test:store'))!;
    const xml = await virsh(lv, 'secret-dumpxml', chap);
    expect(xml).toMatch(/<secret ephemeral='no' private='yes'>/);
    expect(xml).toMatch(/<description>CHAP of store<\/description>/);
    expect(await storedValue(chap)).toBe(VALUE);
    expect(await storedValue((await uuidOf('client.admin secret'))!)).toBe('ceph-raw-key');
    expect(await virsh(lv, 'secret-list')).toMatch(/volume \/var\/lib\/libvirt\/images\/enc\.qcow2[\s\S]*|tls spice|vtpm tpm/);
    expect(await virsh(lv, 'secret-get-value', chap).catch((e: Error) => e.message)).toMatch(/secret is private/);
    for (const text of [plan.stdout, plan.stderr, r.stdout, r.stderr, await allText(sb.stateDir), JSON.stringify(await sb.spawned())]) expect(text).not.toContain(VALUE);
    expect((await recorded(sb.stateDir))['secret:chap']).toMatchObject({ uuid: chap, status: 'ready', valueDigest: expect.stringMatching(/^scrypt:[0-9a-f]{16}:[0-9a-f]{64}$/) });
    expect((await sb.run('plan')).stdout).toMatch(/No changes/);
    const show = JSON.parse((await sb.run('show', '-o', 'json')).stdout);
    expect(show.secrets).toContainEqual(expect.objectContaining({ name: 'chap', usage: 'iscsi iqn.2026-01.dev.test:store', uuid: chap, owner: 'created', status: 'in-sync' }));
    expect((await sb.run('show')).stdout).toMatch(/SECRET\s+USAGE\s+UUID\s+OWNER\s+STATUS[\s\S]*ceph-admin\s+ceph client\.admin secret/);
  });

  it('a changed value file, description or usage is reconciled (usage: a new secret, libvirt cannot change it)', async () => {
    const chap = (await uuidOf('iqn.2026-01.dev.test:store'))!;
    await writeFile(p('chap.txt'), `${VALUE}-2`);
    await sb.yaml(SECRETS.replace('CHAP of store', 'CHAP of the store').replace('name: client.admin secret', 'name: client.vms secret'));
    const plan = await sb.run('plan');
    expect(plan.stdout).toMatch(/secrets\.chap +update +description CHAP of store -> CHAP of the store, value as set before -> from .*chap\.txt/);
    expect(plan.stdout).toMatch(/secrets\.ceph-admin +replace +usage ceph "client\.admin secret" -> ceph "client\.vms secret"/);
    expect(plan.stdout).not.toContain(VALUE);
    expect((await sb.run('apply')).code).toBe(0);
    expect(await uuidOf('iqn.2026-01.dev.test:store')).toBe(chap);
    expect(await storedValue(chap)).toBe(`${VALUE}-2`);
    expect(await virsh(lv, 'secret-dumpxml', chap)).toMatch(/CHAP of the store/);
    expect(await uuidOf('client.admin secret')).toBeUndefined();
    expect(await storedValue((await uuidOf('client.vms secret'))!)).toBe('ceph-raw-key');
    expect((await sb.run('plan')).stdout).toMatch(/No changes/);
  });

  it("someone else's secret is left alone; adopted, it is managed and never undefined by prune", async () => {
    await writeFile(p('theirs.xml'), "<secret ephemeral='no' private='yes'><usage type='tls'><name>theirs</name></usage></secret>");
    await virsh(lv, 'secret-define', p('theirs.xml'));
    const theirs = (await uuidOf('theirs'))!;
    await sb.yaml(`${SECRETS}  theirs: { usage: tls, valueFile: $DIR/chap.txt }\n`);
    const refused = await sb.run('plan');
    expect(refused.code).toBe(1);
    expect(refused.stdout + refused.stderr).toMatch(
      /a secret of usage tls "theirs" exists \([0-9a-f-]{36}\) and reconcile did not define it, so it is left alone. To manage it, add adopt: true/,
    );
    await sb.yaml(`${SECRETS}  theirs: { usage: tls, valueFile: $DIR/chap.txt, adopt: true }\n`);
    expect((await sb.run('apply')).code).toBe(0);
    expect(await storedValue(theirs)).toBe(`${VALUE}-2`);
    // Its record says what it is (an update that changes only the value used to record no usage).
    expect((await recorded(sb.stateDir))['secret:theirs']).toMatchObject({ uuid: theirs, usage: 'tls', usageId: 'theirs', adopted: true });
    // Everything leaves the YAML: ours are undefined, the adopted one only forgotten.
    await sb.yaml('version: 1\n');
    const pruned = await sb.run('apply', '--prune');
    expect(pruned.code).toBe(0);
    const left = await virsh(lv, 'secret-list');
    expect(left).toContain(theirs);
    expect(left).not.toMatch(/iqn\.2026-01\.dev\.test:store|client\.vms secret|enc\.qcow2|spice|vtpm/);
    expect(await recorded(sb.stateDir)).toEqual({});
  });
});

describe('a secret that authenticates: CHAP to a tgtd on 127.0.0.1', () => {
  let tgtd: Tgtd | undefined;
  afterAll(() => tgtd?.stop());

  it('an iscsi-direct pool logs in with the declared secret; with a wrong value it cannot', async () => {
    await execa('truncate', ['-s', '16M', p('lun1.img')]);
    tgtd = await startTgtd(223);
    await tgtd.target('iqn.2026-01.dev.test:chap', p('lun1.img'), { user: 'vr-user', password: 'right-chap-pw' });
    const port = tgtd.port;
    const yaml = `version: 1
secrets:
  store-chap: { usage: iscsi, target: iqn.2026-01.dev.test:chap, valueFile: $DIR/store-chap }
pools:
  chapsan:
    type: iscsi-direct
    source: { host: "127.0.0.1:${port}", device: iqn.2026-01.dev.test:chap, initiator: iqn.2026-01.dev.test:vr, auth: { type: chap, username: vr-user, secret: store-chap } }
`;
    await sb.yaml(yaml, 'chap.yaml');
    await writeFile(p('store-chap'), 'wrong-chap-pw');
    const wrong = await sb.run('apply', '-f', p('chap.yaml'));
    expect(wrong.code).toBe(1);
    expect(wrong.stdout).toMatch(/pools\.chapsan: FAILED/);
    await writeFile(p('store-chap'), 'right-chap-pw');
    const right = await sb.run('apply', '-f', p('chap.yaml'));
    expect(right.code, right.stdout + right.stderr).toBe(0);
    expect(right.stdout).toMatch(/secrets\.store-chap: updated/);
    expect(await virsh(lv, 'pool-dumpxml', 'chapsan')).toMatch(/<auth type='chap' username='vr-user'>\s*<secret usage='iqn\.2026-01\.dev\.test:chap'\/>/);
    expect(await virsh(lv, 'vol-list', 'chapsan')).toContain('unit:0:0:1');
    expect((await sb.run('plan', '-f', p('chap.yaml'))).stdout).toMatch(/No changes/);
  });
});
