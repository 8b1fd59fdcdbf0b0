// qemu-img: the only code that knows its command lines. Callers say what they want (an
// image of this format with these options, a conversion, a resize); this file turns it
// into argument arrays, runs them through exec.ts, and reads back what qemu-img reports.
import type { Format, Qcow2Options } from '../reconcile/model.js';
import { rm } from 'node:fs/promises';
import { CommandError, run, runEach, runLong } from './exec.js';
import { optionValue } from './option-escape.js';

/** qemu driver names of the declared formats (raw + LUKS is qemu's own "luks" driver). */
export const DRIVER: Record<Format, string> = { raw: 'raw', qcow2: 'qcow2', vhd: 'vpc', vhdx: 'vhdx', vmdk: 'vmdk' };

/** `qemu-img info --output=json`, as qemu-img prints it. */
export interface QemuImgInfo {
  format: string;
  'virtual-size': number;
  'actual-size'?: number;
  'cluster-size'?: number;
  'backing-filename'?: string;
  'full-backing-filename'?: string;
  'backing-filename-format'?: string;
  'format-specific'?: { type?: string; data?: Record<string, unknown> };
}

/** The image's metadata; `driver` forces a format (a fixed VHD probes as raw). Never locks the image. */
export async function info(path: string, driver?: string): Promise<QemuImgInfo> {
  const { stdout } = await run('qemu-img', ['info', '--force-share', '--output=json', ...(driver ? ['-f', driver] : []), path]);
  return JSON.parse(stdout) as QemuImgInfo;
}

/** The persistent dirty bitmaps of a qcow2 image (libvirt's checkpoints), with their flags ("auto": enabled; "in-use": not saved cleanly, so unusable). */
export function bitmapsOf(i: QemuImgInfo): { name: string; flags: string[] }[] {
  return ((i['format-specific']?.data?.bitmaps as { name: string; flags?: string[] }[] | undefined) ?? []).map((b) => ({ name: b.name, flags: b.flags ?? [] }));
}

/** Removes a persistent dirty bitmap from a qcow2 image at rest. */
export async function removeBitmap(path: string, name: string): Promise<void> {
  await run('qemu-img', ['bitmap', '--remove', '-f', 'qcow2', path, name]);
}

/**
 * Points a qcow2 image at a backing file without touching its data (rebase -u): an incremental
 * backup holds only changed clusters and reads the rest through the previous backup. A
 * relative `backing` is relative to the image's directory, so a chain can move as one.
 */
export async function setBacking(path: string, backing: string, backingDriver: string): Promise<void> {
  await run('qemu-img', ['rebase', '-u', '-f', 'qcow2', '-b', backing, '-F', backingDriver, path]);
}

/**
 * Rewrites a qcow2 overlay so that it holds `data` (an image read through its own chain) as
 * only the clusters where `data` differs from the overlay's backing file — an overlay on its
 * base again, not a full copy with a backing reference. The same file (qemu-img create
 * truncates it in place: its inode, owner and mode stay), with the options it had (cluster
 * size, compat, lazy refcounts, extended L2, compression, refcount width) and the backing file
 * named as it was. The caller keeps a copy aside: the overlay's old content is gone at once.
 */
export async function rewriteOverlay(overlay: string, data: { path: string; driver: string }): Promise<void> {
  const i = await info(overlay, 'qcow2');
  const backing = i['backing-filename'];
  if (!backing) throw new Error(`${overlay} has no backing file`);
  const d = (i['format-specific']?.data ?? {}) as Record<string, unknown>;
  const opts = [
    `compat=${d.compat ?? '1.1'}`,
    ...(i['cluster-size'] ? [`cluster_size=${i['cluster-size']}`] : []),
    ...(d['lazy-refcounts'] !== undefined ? [`lazy_refcounts=${d['lazy-refcounts'] ? 'on' : 'off'}`] : []),
    ...(d['extended-l2'] !== undefined ? [`extended_l2=${d['extended-l2'] ? 'on' : 'off'}`] : []),
    ...(d['compression-type'] ? [`compression_type=${d['compression-type']}`] : []),
    ...(d['refcount-bits'] ? [`refcount_bits=${d['refcount-bits']}`] : []),
  ];
  const backingDriver = i['backing-filename-format'] ?? 'qcow2';
  await run('qemu-img', ['create', '-q', '-f', 'qcow2', '-o', opts.join(','), '-b', backing, '-F', backingDriver, overlay, String(i['virtual-size'])]);
  // The difference: a scratch overlay on the data, rebased (safe mode: every cluster compared)
  // onto the emptied overlay, holds just what differs from the base; committed into it.
  const diff = `${overlay}.restore-diff`;
  try {
    await run('qemu-img', ['create', '-q', '-f', 'qcow2', '-b', data.path, '-F', data.driver, diff]);
    await run('qemu-img', ['rebase', '-f', 'qcow2', '-b', overlay, '-F', 'qcow2', diff]);
    await run('qemu-img', ['commit', '-q', '-f', 'qcow2', diff]);
  } finally {
    await rm(diff, { force: true });
  }
}

/** Format options of a new image, as declared. */
export interface ImageOptions {
  format: Format;
  qcow2?: Qcow2Options;
  vmdk?: { adapterType?: string; subformat?: string };
  vhd?: { subformat?: string };
  vhdx?: { subformat?: string };
}

/** A passphrase is handed to qemu as a file it reads itself: never on the command line. */
export interface Secret {
  passphraseFile: string;
  /** ms a key derivation takes, for a keyslot written now (qemu's iter-time; its default 2000) */
  iterTime?: number;
}

/** signal: cancels the command; progress: the percentage done (qemu-img -p), as it goes */
type Sig = { signal?: AbortSignal; progress?: (percent: number) => void };

function secretArgs(s: Secret | undefined, id: string): string[] {
  return s ? ['--object', `secret,id=${id},file=${optionValue(s.passphraseFile)}`] : [];
}

function createOptions(o: ImageOptions, encryption: Secret | undefined): string[] {
  const encrypted = !!encryption;
  const iter = encryption?.iterTime ? [`iter-time=${encryption.iterTime}`] : [];
  const out: string[] = [];
  if (o.format === 'qcow2') {
    const q = o.qcow2 ?? {};
    out.push(`compat=${q.compat ?? '1.1'}`);
    if (q.clusterSize) out.push(`cluster_size=${q.clusterSize}`);
    if (q.compression) out.push(`compression_type=${q.compression}`);
    if (q.preallocation) out.push(`preallocation=${q.preallocation}`);
    if (q.lazyRefcounts !== undefined) out.push(`lazy_refcounts=${q.lazyRefcounts ? 'on' : 'off'}`);
    if (q.refcountBits) out.push(`refcount_bits=${q.refcountBits}`);
    if (q.extendedL2 !== undefined) out.push(`extended_l2=${q.extendedL2 ? 'on' : 'off'}`);
    if (encrypted) out.push('encrypt.format=luks', 'encrypt.key-secret=sec0', ...iter.map((i) => `encrypt.${i}`));
  } else if (o.format === 'raw' && encrypted) {
    out.push('key-secret=sec0', ...iter);
  } else if (o.format === 'vmdk') {
    if (o.vmdk?.adapterType) out.push(`adapter_type=${o.vmdk.adapterType}`);
    if (o.vmdk?.subformat) out.push(`subformat=${o.vmdk.subformat}`);
  } else if (o.format === 'vhd') {
    // force_size keeps the exact requested size instead of rounding to a CHS geometry.
    out.push(`subformat=${o.vhd?.subformat ?? 'dynamic'}`, 'force_size=on');
  } else if (o.format === 'vhdx') {
    if (o.vhdx?.subformat) out.push(`subformat=${o.vhdx.subformat}`);
  }
  return out;
}

/** qemu's --image-opts form: needed whenever an encrypted image is opened. */
function imageOpts(path: string, driver: string, secretId?: string): string {
  const file = optionValue(path);
  if (!secretId) return `driver=${driver},file.filename=${file}`;
  const key = driver === 'luks' ? 'key-secret' : 'encrypt.key-secret';
  return `driver=${driver},file.filename=${file},${key}=${secretId}`;
}

export function driverOf(format: Format, encrypted: boolean): string {
  return format === 'raw' && encrypted ? 'luks' : DRIVER[format];
}

/** A new image: blank, or an overlay on `backing` (size: the backing file's when omitted). */
export async function create(target: string, o: CreateSpec, sig: Sig = {}): Promise<void> {
  await run('qemu-img', createArgs(target, o), sig);
}

type CreateSpec = ImageOptions & { size?: number; encryption?: Secret; backing?: { path: string; driver: string } };

function createArgs(target: string, o: CreateSpec): string[] {
  const opts = createOptions(o, o.encryption);
  const args = ['create', '-q', '-f', driverOf(o.format, !!o.encryption), ...secretArgs(o.encryption, 'sec0'), ...(opts.length ? ['-o', opts.join(',')] : [])];
  if (o.backing) args.push('-b', o.backing.path, '-F', o.backing.driver);
  args.push(target);
  if (o.size !== undefined) args.push(String(o.size));
  return args;
}

/**
 * Many unencrypted images created by one shell process (see runEach): each its own outcome,
 * undefined when made. Encrypted images go through create(), which retries qemu's transient
 * LUKS failure and keeps the passphrase file's name out of any script.
 */
export async function createMany(items: { target: string; spec: Omit<CreateSpec, 'encryption'> }[]): Promise<(string | undefined)[]> {
  const results = await runEach(items.map((it) => ['qemu-img', ...createArgs(it.target, it.spec)]));
  return results.map((r) =>
    r.code === 0 ? undefined : `qemu-img create failed (exit ${r.code}): ${(r.stderr || r.stdout).trim().split('\n').slice(0, 3).join(' / ') || 'no error output'}`,
  );
}

/** `info` of many files in one shell process: each file's report, or why it could not be read. */
export async function infoMany(paths: string[]): Promise<(QemuImgInfo | Error)[]> {
  const results = await runEach(paths.map((p) => ['qemu-img', 'info', '--force-share', '--output=json', p]));
  return results.map((r, i) => {
    if (r.code !== 0) return new CommandError(['qemu-img', 'info', paths[i]!], r.stderr || r.stdout, r.code);
    try {
      return JSON.parse(r.stdout) as QemuImgInfo;
    } catch {
      return new Error(`qemu-img info ${paths[i]}: unreadable output: ${r.stdout.slice(0, 200)}`);
    }
  });
}

/**
 * Copies `source` into an existing image `target` (made by create at its final size): -n keeps
 * the target's options, and a new target reads as zeros, so zeros are not written.
 */
export async function convertInto(
  source: { path: string; driver?: string; encryption?: Secret },
  /** overwrite: the target holds data already (a restore), so every block is written, zeros too */
  target: { path: string; format: Format; encryption?: Secret; compressed?: boolean; overwrite?: boolean },
  sig: Sig = {},
): Promise<void> {
  const driver = driverOf(target.format, !!target.encryption);
  const srcArgs = source.encryption ? ['--image-opts', imageOpts(source.path, source.driver ?? 'qcow2', 'src0')] : [...(source.driver ? ['-f', source.driver] : []), source.path];
  const dstArgs = target.encryption ? ['--target-image-opts', imageOpts(target.path, driver, 'sec0')] : ['-O', driver, target.path];
  const args = [
    'convert',
    '-n',
    ...(target.overwrite ? [] : ['--target-is-zero']),
    ...(target.compressed ? ['-c'] : []),
    ...secretArgs(source.encryption, 'src0'),
    ...secretArgs(target.encryption, 'sec0'),
    ...srcArgs,
    ...dstArgs,
  ];
  if (!sig.progress) {
    await run('qemu-img', args, sig);
    return;
  }
  // -p prints "    (45.00/100%)" with carriage returns as it goes.
  const report = sig.progress;
  await runLong('qemu-img', [args[0]!, '-p', ...args.slice(1)], {
    signal: sig.signal,
    onStdout: (chunk) => {
      const all = [...chunk.matchAll(/\((\d+(?:\.\d+)?)\/100%\)/g)];
      if (all.length) report(Number(all[all.length - 1]![1]));
    },
  });
}

/**
 * A whole copy in a new file of another format (backups, restores). forceShare: the source is
 * in use. An encrypted source is opened with its passphrase; an encrypted target (driver
 * qcow2: LUKS inside qcow2; luks: raw LUKS) is made with its own.
 */
export async function convertCopy(
  source: { path: string; driver: string; forceShare?: boolean; encryption?: Secret },
  target: { path: string; driver: string; encryption?: Secret },
): Promise<void> {
  const src = source.encryption ? ['--image-opts', imageOpts(source.path, source.driver, 'src0')] : ['-f', source.driver, source.path];
  const iter = target.encryption?.iterTime ? `,${target.driver === 'luks' ? '' : 'encrypt.'}iter-time=${target.encryption.iterTime}` : '';
  const dst = target.encryption ? ['-o', `${target.driver === 'luks' ? 'key-secret=sec0' : 'encrypt.format=luks,encrypt.key-secret=sec0'}${iter}`] : [];
  await run('qemu-img', [
    'convert',
    ...(source.forceShare ? ['-U'] : []),
    ...secretArgs(source.encryption, 'src0'),
    ...secretArgs(target.encryption, 'sec0'),
    ...src,
    '-O',
    target.driver,
    ...dst,
    target.path,
  ]);
}

/** Throws unless the two images hold the same data (each opened with its passphrase, if encrypted). */
export async function compare(a: { path: string; driver: string; encryption?: Secret }, b: { path: string; driver: string; encryption?: Secret }): Promise<void> {
  if (!a.encryption && !b.encryption) {
    await run('qemu-img', ['compare', '-f', a.driver, '-F', b.driver, a.path, b.path]);
    return;
  }
  await run('qemu-img', [
    'compare',
    ...secretArgs(a.encryption, 'a0'),
    ...secretArgs(b.encryption, 'b0'),
    '--image-opts',
    imageOpts(a.path, a.driver, a.encryption ? 'a0' : undefined),
    imageOpts(b.path, b.driver, b.encryption ? 'b0' : undefined),
  ]);
}

/** Grows an image in place (qcow2, raw). Shrinking is never asked of this function. */
export async function resize(path: string, format: Format, size: number, o: { preallocation?: string; encryption?: Secret } = {}): Promise<void> {
  const driver = driverOf(format, !!o.encryption);
  const prealloc = o.preallocation && o.preallocation !== 'off' && !(format === 'raw' && o.preallocation === 'metadata') ? [`--preallocation=${o.preallocation}`] : [];
  const target = o.encryption ? [...secretArgs(o.encryption, 'sec0'), '--image-opts', imageOpts(path, driver, 'sec0')] : ['-f', driver, path];
  await run('qemu-img', ['resize', '-q', ...prealloc, ...target, String(size)]);
}

export interface CheckResult {
  path: string;
  format?: string;
  /** false: the format has no consistency metadata to check (raw) */
  checkable: boolean;
  leaks: number;
  corruptions: number;
  leaksFixed: number;
  corruptionsFixed: number;
  checkErrors: number;
  error?: string;
}

/**
 * `qemu-img check`: leaks and corruptions, and their repair. Repair never uses force-share:
 * qemu's own image locking then refuses an image that a running guest holds open, on top of
 * the caller's check of running domains.
 */
export async function check(p: string, opts: { repair?: 'leaks' | 'all'; inUse: boolean; driver?: string; encryption?: Secret }): Promise<CheckResult> {
  const args = ['check', '--output=json', ...(opts.encryption ? secretArgs(opts.encryption, 'k0') : opts.driver ? ['-f', opts.driver] : [])];
  if (opts.repair) args.push('-r', opts.repair);
  else if (opts.inUse) args.push('--force-share');
  const base: CheckResult = { path: p, checkable: true, leaks: 0, corruptions: 0, leaksFixed: 0, corruptionsFixed: 0, checkErrors: 0 };
  let stdout: string;
  try {
    const target = opts.encryption ? ['--image-opts', imageOpts(p, opts.driver ?? 'qcow2', 'k0')] : [p];
    ({ stdout } = await run('qemu-img', [...args, ...target], { retries: opts.encryption ? undefined : 0 }));
  } catch (e) {
    if (!(e instanceof CommandError)) throw e;
    // qemu-img check exits 2 (corruptions) or 3 (leaks) with its JSON report on stdout.
    if (e.stdout && (e.exitCode === 2 || e.exitCode === 3)) stdout = e.stdout;
    else if (e.exitCode === 63 || /does not support checks/.test(e.stderr)) return { ...base, checkable: false };
    // Leak repair gives up when the refcount structures themselves are broken: report what
    // a read-only check finds (corruptions, which need --repair=all).
    else if (opts.repair === 'leaks' && /need to rebuild refcount structures/.test(e.stderr)) return check(p, { inUse: false, driver: opts.driver, encryption: opts.encryption });
    else return { ...base, error: e.message };
  }
  const j = JSON.parse(stdout) as Record<string, number | string>;
  return {
    ...base,
    format: String(j.format ?? ''),
    leaks: Number(j.leaks ?? 0),
    corruptions: Number(j.corruptions ?? 0),
    leaksFixed: Number(j['leaks-fixed'] ?? 0),
    corruptionsFixed: Number(j['corruptions-fixed'] ?? 0),
    checkErrors: Number(j['check-errors'] ?? 0),
  };
}

/**
 * Whether the passphrase in `passphraseFile` opens the LUKS image at `path` (qcow2-embedded or
 * raw): qemu-io reads its first sector, which unlocks a keyslot or fails. Shared (-U), so an
 * image a running domain holds can be checked. The passphrase is a file qemu reads itself.
 */
export async function unlocks(path: string, format: 'qcow2' | 'raw', passphraseFile: string): Promise<boolean> {
  const opts = format === 'qcow2' ? `driver=qcow2,encrypt.key-secret=k0,file.filename=${optionValue(path)}` : `driver=luks,key-secret=k0,file.filename=${optionValue(path)}`;
  try {
    await run('qemu-io', ['-r', '-U', '--object', `secret,id=k0,file=${optionValue(passphraseFile)}`, '--image-opts', opts, '-c', 'read 0 512']);
    return true;
  } catch (e) {
    if (e instanceof CommandError && /Invalid password|cannot unlock|keyslot/i.test(e.stderr + e.stdout)) return false;
    throw e;
  }
}

/**
 * Re-keys a LUKS image no process has open, knowing its old passphrase: a keyslot for `next`
 * (unless it opens already), then every keyslot `old` opens erased, then checked.
 */
export async function rekeyWith(path: string, format: 'qcow2' | 'raw', old: Secret, next: Secret): Promise<{ added: boolean; erased: boolean }> {
  const driver = format === 'raw' ? 'luks' : 'qcow2';
  const o = driver === 'luks' ? '' : 'encrypt.';
  const secrets = [...secretArgs(old, 'old0'), ...secretArgs(next, 'new0')];
  const added = !(await unlocks(path, format, next.passphraseFile));
  if (added)
    await run('qemu-img', [
      'amend',
      ...secrets,
      '--image-opts',
      imageOpts(path, driver, 'old0'),
      '-o',
      `${o}state=active,${o}new-secret=new0${next.iterTime ? `,${o}iter-time=${next.iterTime}` : ''}`,
    ]);
  if (!(await unlocks(path, format, next.passphraseFile))) throw new Error(`${path}: the keyslot added for the new passphrase does not open it`);
  let erased = true;
  try {
    await run('qemu-img', ['amend', ...secrets, '--image-opts', imageOpts(path, driver, 'new0'), '-o', `${o}state=inactive,${o}old-secret=old0`], { retries: 0 });
  } catch (e) {
    if (!(e instanceof CommandError && /No keyslots match given \(old\) password/.test(e.stderr))) throw e;
    erased = false;
  }
  return { added, erased };
}
