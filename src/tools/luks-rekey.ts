// Changing the passphrase of a LUKS image (qcow2-embedded or raw) in place, without ever
// knowing the old one: libvirt's secret holds it, and QEMU opens the image with it. The QEMU
// is the running domain that has the image open, or else a paused, transient helper domain
// whose only device is the image (its guest never runs a single instruction). Through that
// QEMU's monitor a keyslot for the new passphrase is added, the image is checked to open with
// it, and only then are the keyslots the old passphrase opens erased (QEMU's blockdev-amend).
// The new passphrase reaches QEMU as libvirt hands it secrets: AES-256-CBC under the
// domain's master key (a root-only file libvirt gave that QEMU), so neither the monitor
// command nor any argv or log line carries it.
import { createCipheriv, createHash, randomBytes } from 'node:crypto';
import { readFile, readdir, readlink, realpath } from 'node:fs/promises';
import { failpoint } from '../failpoint.js';
import { buildXml } from './xml.js';
import { TRANSIENT_RETRIES, transientDelay } from './exec.js';
import { runningDomainDiskUses } from './libvirt-domain.js';
import { rekeyWith, unlocks } from './qemu-img.js';
import { withTempFile } from './scratch.js';
import type { Virsh } from './virsh.js';

export interface Rekey {
  /** the image's path (a file, or a file-pool volume's file) */
  path: string;
  format: 'qcow2' | 'raw';
  /** the libvirt secret (usage volume, this path) that holds the passphrase opening it now */
  secretUsage: string;
  /** the new passphrase, and the file it was read from (qemu-io checks the image opens with it) */
  passphrase: Uint8Array;
  passphraseFile: string;
  /** ms the new keyslot's key derivation takes (qemu's iter-time; its default when undefined) */
  iterTime?: number;
  /** the passphrase that opened it before (declared): qemu-img re-keys with it when the libvirt secret cannot */
  previousFile?: string;
  /** whether the new passphrase opens it already (the caller checked: each check is a key derivation) */
  opensAlready: boolean;
}

/** How the re-key went: through which QEMU, and whether old keyslots were still there to erase. */
export interface RekeyResult {
  /** the QEMU it went through (a domain, or a paused helper), or qemu-img with previousPassphraseFile */
  through: { domain: string; helper: boolean } | { qemuImg: true };
  added: boolean;
  erased: boolean;
}

const HELPER_PREFIX = 'vr-rekey-';

/** A re-key that stopped before it changed any keyslot: the image opens as it did. */
export class RekeyNotStarted extends Error {}

/** The helper domain's name for an image: fixed per path, so a leftover one (a kill -9) is found and destroyed. */
export const helperName = (p: string) => `${HELPER_PREFIX}${createHash('sha256').update(p).digest('hex').slice(0, 16)}`;

/**
 * Re-keys the image: new keyslot (unless the new passphrase opens it already, as after an
 * interrupted re-key), checked to open, then the old passphrase's keyslots erased.
 */
export async function rekeyImage(v: Virsh, r: Rekey): Promise<RekeyResult> {
  if (/^[a-z0-9+]+:\/\/[^/]/i.test(v.uri))
    throw new RekeyNotStarted(
      `re-keying ${r.path} needs reconcile on the host itself (the connection ${v.uri} is remote: QEMU's key for the new passphrase is a file on that host)`,
    );
  const real = await realpath(r.path);
  const holder = await runningHolder(v, r.path, real);
  const helper = holder ? undefined : helperName(real);
  const domain = holder?.domain ?? helper!;
  const added = !r.opensAlready;
  if (helper) {
    const opened = await startHelper(v, helper, real, r);
    // The new passphrase opens it and libvirt's (old) one no longer does: an interrupted
    // re-key erased the old keyslots already.
    if (!opened && !added) return { through: { domain, helper: true }, added, erased: false };
    if (!opened && r.previousFile && (await unlocks(r.path, r.format, r.previousFile))) {
      // The secret was lost or never held it: the declared previous passphrase does.
      const done = await rekeyWith(r.path, r.format, { passphraseFile: r.previousFile }, { passphraseFile: r.passphraseFile, iterTime: r.iterTime });
      return { through: { qemuImg: true }, ...done };
    }
    if (!opened)
      throw new RekeyNotStarted(
        `${r.path}: its libvirt secret does not open it (nor does the new passphrase${r.previousFile ? ', nor previousPassphraseFile' : ''}); nothing is changed${r.previousFile ? '' : '. Declare encryption.previousPassphraseFile with the passphrase that opens it'}`,
      );
  }
  try {
    const qmp = new Monitor(v, domain);
    const node = await qmp.formatNode([real, r.path, ...(holder?.names ?? [])]);
    if (added) {
      const id = `vr-newkey-${randomBytes(4).toString('hex')}`;
      await qmp.addSecret(id, r.passphrase, real);
      try {
        await qmp.amend(node, r.format, { state: 'active', 'new-secret': id, ...(r.iterTime ? { 'iter-time': r.iterTime } : {}) });
      } catch (e) {
        // QEMU unlocks the master key with the passphrase it opened the image with: a domain
        // running since before the last passphrase change holds one the image no longer takes.
        if (holder && /Invalid password, cannot unlock any keyslot/.test((e as Error).message))
          throw new RekeyNotStarted(
            `${r.path}: domain ${holder.domain} has had it open since before its last passphrase change, and QEMU can re-key it only with the passphrase it opened it with; nothing was changed. Restart the domain (or shut it off) and apply again`,
          );
        throw e;
      } finally {
        await qmp.run('object-del', { id }).catch(() => undefined);
      }
      if (!(await unlocks(r.path, r.format, r.passphraseFile)))
        throw new Error(`${r.path}: the keyslot added for the new passphrase does not open it; the old passphrase still does, and the secret is left as it was`);
      failpoint('rekey-added');
    }
    // Every keyslot the old passphrase (QEMU's key-secret for the image) opens; none left is
    // fine (an interrupted re-key erased them already).
    const erased = await qmp.amend(node, r.format, { state: 'inactive', 'old-secret': node.secret }, /No keyslots match given \(old\) password/);
    if (!(await unlocks(r.path, r.format, r.passphraseFile))) throw new Error(`${r.path}: after erasing the old keyslots the new passphrase does not open it`);
    return { through: { domain, helper: !!helper }, added, erased };
  } finally {
    if (helper) await v.exec(['destroy', helper]).catch(() => undefined);
  }
}

/** The running domain that has the image as a disk: by its path, or as a pool volume whose path it is. */
async function runningHolder(v: Virsh, p: string, real: string): Promise<{ domain: string; names: string[] } | undefined> {
  const uses = await runningDomainDiskUses(v);
  // By the path it names, or one that leads to the same file (a symlink, `//`).
  for (const u of uses) {
    const f = u.disk.source.file;
    if (f && (f === p || f === real || (await realpath(f).catch(() => undefined)) === real)) return { domain: u.domain, names: [f] };
  }
  const vols = uses.filter((u) => u.disk.source.pool && u.disk.source.volume);
  const paths = vols.length ? await v.batch(vols.map((u) => ['vol-path', '--pool', u.disk.source.pool!, u.disk.source.volume!])) : [];
  const i = vols.findIndex((_, i) => [p, real].includes((paths[i] ?? '').trim()));
  return i < 0 ? undefined : { domain: vols[i]!.domain, names: [(paths[i] ?? '').trim()] };
}

/**
 * What a killed re-key of this image can leave holding it: its paused helper domain, or in the
 * running domain that has it, an amend job never dismissed (a concluded job keeps the image's
 * permissions: nothing else may read it) and the new passphrase's secret object. Cleared
 * before a re-key resumes.
 */
export async function clearInterruptedRekey(v: Virsh, p: string): Promise<void> {
  const real = await realpath(p);
  await v.exec(['destroy', helperName(real)]).catch(() => undefined);
  const holder = await runningHolder(v, p, real);
  if (!holder) return;
  const qmp = new Monitor(v, holder.domain);
  for (const j of (await qmp.run('query-jobs')) as { id: string; status: string }[]) {
    if (!j.id.startsWith('vr-amend-')) continue;
    // One still running is waited for (an amend is seconds), then dismissed.
    for (let i = 0; i < 600 && (await qmp.job(j.id))?.status !== 'concluded'; i++) await new Promise((r) => setTimeout(r, 100));
    await qmp.run('job-dismiss', { id: j.id }).catch(() => undefined);
  }
  const objects = (await qmp.run('qom-list', { path: '/objects' })) as { name: string }[];
  for (const o of objects) if (o.name.startsWith('vr-newkey-')) await qmp.run('object-del', { id: o.name }).catch(() => undefined);
}

/**
 * A paused transient domain with the image as its only disk, opened by QEMU with libvirt's
 * secret; false if that secret does not open the image.
 */
async function startHelper(v: Virsh, name: string, path: string, r: Rekey): Promise<boolean> {
  // One left by a killed re-key of this image goes first (it holds the image's write lock).
  await v.exec(['destroy', name]).catch(() => undefined);
  const xml = buildXml({
    domain: {
      '@type': 'qemu',
      name,
      description: `virt-reconcile: re-keying ${path} (paused; destroyed when done)`,
      memory: { '@unit': 'MiB', '#text': 32 },
      vcpu: 1,
      os: { type: 'hvm' },
      on_crash: 'destroy',
      devices: {
        disk: {
          '@type': 'file',
          '@device': 'disk',
          driver: { '@name': 'qemu', '@type': r.format },
          source: { '@file': path, encryption: { '@format': 'luks', secret: { '@type': 'passphrase', '@usage': r.secretUsage } } },
          target: { '@dev': 'vda', '@bus': 'virtio' },
        },
      },
    },
  });
  for (let attempt = 1; ; attempt++) {
    try {
      await withTempFile(xml, (f) => v.exec(['create', f, '--paused']));
      return true;
    } catch (e) {
      if (WRONG_PASSPHRASE.test((e as Error).message)) return false;
      // QEMU opens the disk (a LUKS key derivation, calibrated when the keyslot was written) before
      // it listens on its monitor; on a loaded host without KVM that can outlast libvirt's wait.
      // Nothing was opened for writing by then: starting it again is safe.
      if (attempt < HELPER_START_TRIES && MONITOR_TIMEOUT.test((e as Error).message)) continue;
      throw new Error(`${path}: could not open it with its libvirt secret to re-key it (${(e as Error).message.trim()})`);
    }
  }
}

const HELPER_START_TRIES = 3;
const MONITOR_TIMEOUT = /failed to connect to monitor socket|monitor socket did not show up/;

// QEMU's words when no keyslot opens with the passphrase it was given.
const WRONG_PASSPHRASE = /Invalid password, cannot unlock any keyslot/;

interface FormatNode {
  name: string;
  /** the id of the secret object QEMU opened it with (the old passphrase) */
  secret: string;
}

/** One domain's QEMU monitor, through virsh qemu-monitor-command (commands carry ids and ciphertext only). */
class Monitor {
  private amendCommand?: string;
  constructor(
    private readonly v: Virsh,
    private readonly domain: string,
  ) {}

  async run(execute: string, args?: object): Promise<unknown> {
    const out = await this.v.exec(['qemu-monitor-command', this.domain, JSON.stringify({ execute, ...(args ? { arguments: args } : {}) })]);
    const reply = JSON.parse(out) as { return?: unknown; error?: { desc: string } };
    if (reply.error) throw new Error(`QEMU ${execute}: ${reply.error.desc}`);
    return reply.return;
  }

  /** The LUKS layer's node of the image (QEMU knows it by one of `paths`: qcow2, or raw LUKS) and its key-secret. */
  async formatNode(paths: string[]): Promise<FormatNode> {
    const nodes = (await this.run('query-named-block-nodes', { flat: true })) as { 'node-name': string; drv: string; file: string }[];
    for (const n of nodes) {
      if (n.drv !== 'qcow2' && n.drv !== 'luks') continue;
      if (!n.file.startsWith('json:')) continue;
      const o = JSON.parse(n.file.slice(5)) as Record<string, unknown>;
      const file = o.file as { filename?: string } | undefined;
      const secret = (o['encrypt.key-secret'] ?? o['key-secret']) as string | undefined;
      if (file?.filename && paths.includes(file.filename) && secret) return { name: n['node-name'], secret };
    }
    throw new Error(`${paths[0]} is not open as a LUKS image in domain ${this.domain}`);
  }

  async job(id: string): Promise<{ id: string; status: string; error?: string } | undefined> {
    return ((await this.run('query-jobs')) as { id: string; status: string; error?: string }[]).find((x) => x.id === id);
  }

  /** Adds a secret object holding `value`, encrypted under the domain's master key. */
  async addSecret(id: string, value: Uint8Array, image: string): Promise<void> {
    const keyFile = (await this.run('qom-get', { path: '/objects/masterKey0', property: 'file' })) as string;
    const key = await readMasterKey(keyFile, image);
    const iv = randomBytes(16);
    const c = createCipheriv('aes-256-cbc', key, iv);
    const data = Buffer.concat([c.update(value), c.final()]);
    key.fill(0);
    await this.run('object-add', { 'qom-type': 'secret', id, data: data.toString('base64'), format: 'base64', keyid: 'masterKey0', iv: iv.toString('base64') });
  }

  /** Runs one LUKS amend job to its end; false when it failed with `tolerated` (nothing to do). */
  async amend(node: FormatNode, format: 'qcow2' | 'raw', luks: Record<string, string | number>, tolerated?: RegExp, attempt = 0): Promise<boolean> {
    this.amendCommand ??= ((await this.run('query-commands')) as { name: string }[]).some((c) => c.name === 'blockdev-amend') ? 'blockdev-amend' : 'x-blockdev-amend';
    const job = `vr-amend-${randomBytes(4).toString('hex')}`;
    const options = format === 'qcow2' ? { driver: 'qcow2', encrypt: { format: 'luks', ...luks } } : { driver: 'luks', ...luks };
    await this.run(this.amendCommand, { 'job-id': job, 'node-name': node.name, options });
    // Adding a keyslot derives a key for iter-time (two seconds by default).
    for (let i = 0; ; i++) {
      const j = await this.job(job);
      if (!j) throw new Error(`QEMU amend job ${job} disappeared`);
      if (j.status === 'concluded') {
        await this.run('job-dismiss', { id: job });
        if (!j.error) return true;
        if (tolerated?.test(j.error)) return false;
        // QEMU's key derivation times itself and, on some virtual machines, cannot (as qemu-img).
        if (j.error.includes('Unable to get accurate CPU usage') && attempt < TRANSIENT_RETRIES) {
          await new Promise((r) => setTimeout(r, transientDelay(attempt)));
          return this.amend(node, format, luks, tolerated, attempt + 1);
        }
        throw new Error(`QEMU could not change the keyslots: ${j.error}`);
      }
      // (iterTime may be up to a minute, and an erase tries every keyslot.)
      if (i > 6000) throw new Error(`QEMU amend job ${job} did not end within ten minutes`);
      await new Promise((r) => setTimeout(r, 100));
    }
  }
}

/**
 * The master key libvirt gave this domain's QEMU: read through that QEMU process's own view of
 * the filesystem (a libvirtd in a mount namespace of its own keeps it there). The process is
 * the one started with this key file that has the image open.
 */
async function readMasterKey(keyFile: string, image: string): Promise<Buffer> {
  for (const pid of await readdir('/proc')) {
    if (!/^\d+$/.test(pid)) continue;
    const cmdline = await readFile(`/proc/${pid}/cmdline`, 'latin1').catch(() => '');
    if (!cmdline.includes(keyFile)) continue;
    const fds = await readdir(`/proc/${pid}/fd`).catch(() => [] as string[]);
    const open = await Promise.all(fds.map((fd) => readlink(`/proc/${pid}/fd/${fd}`).catch(() => '')));
    if (!open.includes(image)) continue;
    const key = await readFile(`/proc/${pid}/root${keyFile}`);
    if (key.length !== 32) throw new Error(`the QEMU master key ${keyFile} is ${key.length} bytes, not 32`);
    return key;
  }
  throw new Error(`cannot find the QEMU process that has ${image} open (with master key ${keyFile}) on this host`);
}
