// Backups of declared VMs: run one now (hooks around it, verify, retention), list, verify
// again, restore, and which schedules are overdue. Schedules fire from `reconcile watch`.
import { mkdir, readdir, rename, rm, stat } from 'node:fs/promises';
import path from 'node:path';
import { runHook } from '../tools/hooks.js';
import { check as checkImage, compare, convertCopy, convertInto as writeInto, create, info, unlocks, type Secret } from '../tools/qemu-img.js';
import type { Format } from '../reconcile/model.js';
import { sparseCopy } from '../tools/copy.js';
import { formatOfDriver } from '../providers/image/formats.js';
import { createInternalSnapshot, deleteSnapshot, domainState, freeze, pushBackup, revertSnapshot, shutOff, thaw, withExternalSnapshot } from '../tools/libvirt-backup.js';
import { readDisks } from '../tools/libvirt-domain.js';
import { refreshPool } from '../tools/libvirt-pool.js';
import { volumePath } from '../tools/libvirt-volume.js';
import type { Virsh } from '../tools/virsh.js';
import { readBackupRecords, stamp, writeBackupRecords, type BackupFile, type BackupRun } from './records.js';
import { retention, type Verdict } from './retention.js';
import { UserError } from '../reconcile/errors.js';
import { imageSecretUsage, type BackupSpec, type DesiredState } from '../reconcile/model.js';

export interface BackupContext {
  virsh: Virsh;
  stateDir: string;
  log: (line: string) => void;
  now?: () => Date;
  /** the passphraseFile (and iterTime) of each declared encrypted image, by its path (see passphraseFiles) */
  passphrases?: Map<string, Secret>;
}

/** Each declared encrypted image's passphraseFile, by the path its disks and backups name it by. */
export function passphraseFiles(state: DesiredState): Map<string, Secret> {
  const out = new Map<string, Secret>();
  for (const img of Object.values(state.images)) {
    const p = img.encryption ? imageSecretUsage(state, img) : undefined;
    if (p) out.set(p, { passphraseFile: img.encryption!.passphraseFile, iterTime: img.encryption!.iterTime });
  }
  return out;
}

interface DiskSource {
  target: string;
  path: string;
  format: string;
  pool?: string;
  /** a LUKS disk: the libvirt secret QEMU opens it with (usage: its path) */
  secretUsage?: string;
}

/** How qemu-img opens a disk: raw LUKS is qemu's "luks" driver. */
const driverOfDisk = (d: { format: string; secretUsage?: string }) => (d.format === 'raw' && d.secretUsage ? 'luks' : d.format);

/** What an encrypted disk's copy is made with (its passphrase and iterTime); undefined for a plain disk. */
const diskEncryption = (ctx: Pick<BackupContext, 'passphrases'>, d: DiskSource) => (d.secretUsage ? passphraseOf(ctx, d.path, `disk ${d.target} (${d.path})`) : undefined);

/** The passphrase file of an encrypted disk (its declared image's), or why a copy cannot be made. */
function passphraseOf(ctx: Pick<BackupContext, 'passphrases'>, p: string, what: string): Secret {
  const f = ctx.passphrases?.get(p);
  if (!f) throw new UserError(`${what} is encrypted, and no declared image at ${p} gives its passphraseFile; declare the image (with encryption) to back it up or restore it`);
  return f;
}

async function domainDisks(v: Virsh, vm: string, want?: string[]): Promise<{ running: boolean; all: string[]; disks: DiskSource[] }> {
  const state = await domainState(v, vm);
  const running = state === 'running' || state === 'paused';
  // Disks of this host only: a network disk's data lives on its server (backed up there).
  const devices = (await readDisks(v, vm, running)).filter((d) => d.device === 'disk' && d.type !== 'network');
  const disks: DiskSource[] = [];
  for (const d of devices) {
    if (want && !want.includes(d.target)) continue;
    const p = d.type === 'volume' ? await volumePath(v, d.source.pool!, d.source.volume!) : (d.source.file ?? d.source.dev);
    if (!p) throw new Error(`${vm}: disk ${d.target} has no local source to back up`);
    const secretUsage = d.encryption?.format === 'luks' ? (d.encryption.secretUsage ?? p) : undefined;
    disks.push({ target: d.target, path: p, format: d.driverType ?? 'raw', pool: d.type === 'volume' ? d.source.pool : undefined, secretUsage });
  }
  const missing = (want ?? []).filter((t) => !devices.some((d) => d.target === t));
  if (missing.length) throw new UserError(`domain ${vm} has no disk ${missing.join(', ')} (it has: ${devices.map((d) => d.target).join(', ')})`);
  return { running, all: devices.map((d) => d.target), disks };
}

/**
 * A copy made under a temporary name and renamed when complete. An encrypted disk's copy is
 * encrypted with the same passphrase (LUKS in qcow2): a backup never holds its data in clear.
 */
async function convertInto(d: DiskSource, dest: string, forceShare: boolean, ctx: BackupContext): Promise<void> {
  const partial = `${dest}.partial`;
  const encryption = diskEncryption(ctx, d);
  await convertCopy({ path: d.path, driver: driverOfDisk(d), forceShare, encryption }, { path: partial, driver: 'qcow2', encryption });
  await rename(partial, dest);
}

export async function runBackup(spec: BackupSpec, ctx: BackupContext): Promise<BackupRun> {
  const v = ctx.virsh;
  const now = (ctx.now ?? (() => new Date()))();
  const id = `${spec.name}-${stamp(now)}`;
  const records = await readBackupRecords(ctx.stateDir);
  const ran: string[][] = [];
  const failed = { value: false };
  try {
    const { running, all, disks } = await domainDisks(v, spec.vm, spec.disks);
    for (const hook of spec.hooks.pre) {
      ran.push(hook);
      await runHook(hook, spec.hooks.timeoutSeconds);
    }
    const files: BackupFile[] = [];
    const fileFor = (d: DiskSource) => path.join(spec.destination!, `${id}-${d.target}.qcow2`);
    if (spec.destination) await mkdir(spec.destination, { recursive: true });
    ctx.log(`backups.${spec.name}: ${spec.mode} of ${spec.vm} (${disks.map((d) => d.target).join(', ')}${running ? ', running' : ''})`);
    if (spec.mode === 'snapshot') {
      // A running domain's internal snapshot is a full checkpoint, memory included: it is
      // consistent as it is, and a freeze would be captured too (a revert would bring back
      // a frozen guest). Quiesce serves the disk-only modes.
      if (spec.quiesce && running) ctx.log(`backups.${spec.name}: internal snapshot of a running domain includes its memory; no freeze needed`);
      await createInternalSnapshot(v, spec.vm, id, `virt-reconcile backups.${spec.name}`);
    } else if (running && spec.mode === 'copy') {
      // The copies are made here first, at the disks' size (libvirt then reuses them): an
      // encrypted one with the disk's passphrase and iterTime, and qemu-img's transient LUKS
      // failure is tried again (libvirt's own formatting of a target is neither).
      for (const d of disks) {
        const size = (await info(d.path))['virtual-size'];
        await create(`${fileFor(d)}.partial`, { format: 'qcow2', size, encryption: diskEncryption(ctx, d) });
      }
      if (spec.quiesce) await freeze(v, spec.vm);
      try {
        await pushBackup(
          v,
          spec.vm,
          disks.map((d) => ({ target: d.target, file: `${fileFor(d)}.partial`, secretUsage: d.secretUsage })),
          all,
        );
      } finally {
        if (spec.quiesce) await thaw(v, spec.vm);
      }
      for (const d of disks) await rename(`${fileFor(d)}.partial`, fileFor(d));
    } else if (running && spec.mode === 'external') {
      // Frozen only for the instant of the snapshot; thawed exactly once, whatever fails.
      let frozen = false;
      const unfreeze = async () => {
        if (frozen) {
          frozen = false;
          await thaw(v, spec.vm);
        }
      };
      if (spec.quiesce) {
        await freeze(v, spec.vm);
        frozen = true;
      }
      const overlays = disks.map((d) => ({ target: d.target, overlay: path.join(spec.destination!, `.${id}-${d.target}.overlay.qcow2`), secretUsage: d.secretUsage }));
      try {
        await withExternalSnapshot(v, spec.vm, id, overlays, all, async () => {
          await unfreeze();
          for (const d of disks) await convertInto(d, fileFor(d), true, ctx);
        });
      } finally {
        await unfreeze();
        for (const o of overlays) await rm(o.overlay, { force: true });
      }
    } else {
      // Shut off: the disks are quiet; external and copy both are a plain copy.
      for (const d of disks) await convertInto(d, fileFor(d), false, ctx);
    }
    if (spec.mode !== 'snapshot')
      for (const d of disks) files.push({ target: d.target, file: fileFor(d), source: d.path, sourceFormat: d.format, pool: d.pool, encrypted: !!d.secretUsage || undefined });
    const result: BackupRun = { id, schedule: spec.name, vm: spec.vm, mode: spec.mode, at: now.toISOString(), snapshot: spec.mode === 'snapshot' ? id : undefined, files };
    if (spec.verify && files.length) Object.assign(result, await verifyFiles(files, ctx));
    records.runs.push(result);
    if (result.verified !== false) records.lastSuccess[spec.name] = result.at;
    await writeBackupRecords(ctx.stateDir, records);
    ctx.log(`backups.${spec.name}: made ${id}${result.verified === false ? ` — VERIFY FAILED: ${result.verifyError}` : result.verified ? ' (verified)' : ''}`);
    await applyRetention(spec, ctx, now);
    if (result.verified === false) throw new Error(`backup ${id} failed verification: ${result.verifyError}`);
    return result;
  } catch (e) {
    failed.value = true;
    // Half-made copies go; the run is recorded as failed (backup list shows it, with why).
    if (spec.destination) {
      const names = await readdir(spec.destination).catch(() => [] as string[]);
      for (const n of names) if (n.startsWith(`${id}-`) && n.endsWith('.partial')) await rm(path.join(spec.destination, n), { force: true });
    }
    const r = await readBackupRecords(ctx.stateDir);
    const error = (e as Error).message;
    r.lastFailure[spec.name] = { at: now.toISOString(), error };
    if (!r.runs.some((x) => x.id === id)) {
      r.runs.push({ id, schedule: spec.name, vm: spec.vm, mode: spec.mode, at: now.toISOString(), files: [], status: 'failed', error });
      // The failures kept on record are the newest few: each is also in lastFailure until a success.
      const failures = r.runs.filter((x) => x.schedule === spec.name && x.status === 'failed').sort((a, b) => b.at.localeCompare(a.at));
      const dropped = new Set(failures.slice(FAILED_RUNS_KEPT).map((x) => x.id));
      r.runs = r.runs.filter((x) => !dropped.has(x.id));
    }
    await writeBackupRecords(ctx.stateDir, r);
    throw e;
  } finally {
    // Post hooks run whenever pre hooks ran (or there are none), even when the backup failed;
    // a post hook's failure is reported, and fails the run only if the backup itself succeeded.
    if (ran.length || !spec.hooks.pre.length) await runPostHooks(spec, ctx, failed);
  }
}

/** Failed runs of a schedule kept in backup list. */
const FAILED_RUNS_KEPT = 10;

async function runPostHooks(spec: BackupSpec, ctx: BackupContext, backupFailed: { value: boolean }): Promise<void> {
  let first: Error | undefined;
  for (const hook of spec.hooks.post) {
    try {
      await runHook(hook, spec.hooks.timeoutSeconds);
    } catch (e) {
      ctx.log(`backups.${spec.name}: post hook failed: ${(e as Error).message}`);
      first ??= e as Error;
    }
  }
  if (first && !backupFailed.value) throw first;
}

async function verifyFiles(files: BackupFile[], ctx: Pick<BackupContext, 'passphrases'>): Promise<{ verified: boolean; verifyError?: string }> {
  for (const f of files) {
    // An encrypted copy's metadata is read through its passphrase (its disk's, as it is now).
    const encryption = f.encrypted ? ctx.passphrases?.get(f.source) : undefined;
    if (f.encrypted && !encryption) return { verified: false, verifyError: `${f.file} is encrypted, and no declared image at ${f.source} gives its passphraseFile` };
    const r = await checkImage(f.file, { inUse: false, driver: 'qcow2', encryption });
    const bad = r.error ?? (r.corruptions || r.leaks || r.checkErrors ? `${r.corruptions} corruption(s), ${r.leaks} leak(s), ${r.checkErrors} check error(s)` : undefined);
    if (bad) return { verified: false, verifyError: `${f.file}: ${bad}` };
  }
  return { verified: true };
}

/** What retention would do to this schedule's backups now: each kept one with the rules that keep it, each removed one with why. */
export async function pruneVerdict(spec: BackupSpec, stateDir: string, now: Date): Promise<Verdict> {
  return retentionOf(
    spec,
    (await readBackupRecords(stateDir)).runs.filter((r) => r.schedule === spec.name),
    now,
  );
}

// Failed runs hold nothing: retention is about the backups that exist.
const retentionOf = (spec: BackupSpec, runs: BackupRun[], now: Date) =>
  retention(
    runs.filter((r) => r.status !== 'failed'),
    spec.keep,
    { now, maxAgeSeconds: spec.maxAgeSeconds, timeZone: spec.timezone },
  );

/** Protects one backup from retention (`protect: false`: unprotects it). */
export async function setProtected(stateDir: string, schedule: string, id: string, protect: boolean): Promise<void> {
  const records = await readBackupRecords(stateDir);
  const r = records.runs.find((x) => x.id === id && x.schedule === schedule);
  if (!r) throw new UserError(`backups.${schedule} has no backup ${id} (see \`reconcile backup list ${schedule}\`)`);
  r.protected = protect || undefined;
  await writeBackupRecords(stateDir, records);
}

/**
 * Deletes this schedule's backups that no `keep` rule keeps, or older than `maxAge` (see
 * retention.ts); never the newest, never a protected one.
 */
export async function applyRetention(spec: BackupSpec, ctx: BackupContext, now: Date): Promise<string[]> {
  const records = await readBackupRecords(ctx.stateDir);
  const mine = records.runs.filter((r) => r.schedule === spec.name);
  const verdict = retentionOf(spec, mine, now);
  const gone = new Set(verdict.remove.map((x) => x.id));
  const doomed = mine.filter((r) => gone.has(r.id));
  for (const r of doomed) {
    if (r.snapshot)
      await deleteSnapshot(ctx.virsh, r.vm, r.snapshot).catch((e: Error) => {
        if (!/not found|no domain snapshot/i.test(e.message)) throw e;
      });
    for (const f of r.files) await rm(f.file, { force: true });
    ctx.log(`backups.${spec.name}: retention deleted ${r.id}`);
  }
  if (doomed.length) {
    const ids = new Set(doomed.map((r) => r.id));
    records.runs = records.runs.filter((r) => !ids.has(r.id));
    await writeBackupRecords(ctx.stateDir, records);
  }
  return doomed.map((r) => r.id);
}

export interface BackupListing {
  id: string;
  schedule: string;
  vm: string;
  mode: string;
  at: string;
  ageSeconds: number;
  size?: number;
  verified?: boolean;
  /** 'failed' with its error: the run ended in one (nothing was kept) */
  status: 'ok' | 'failed';
  error?: string;
  /** never removed by retention (`backup protect`) */
  protected?: boolean;
  present: boolean;
}

export async function listBackups(stateDir: string, schedule?: string, now = new Date()): Promise<BackupListing[]> {
  const records = await readBackupRecords(stateDir);
  const out: BackupListing[] = [];
  for (const r of records.runs.filter((x) => !schedule || x.schedule === schedule).sort((a, b) => a.at.localeCompare(b.at))) {
    let size = 0;
    let present = true;
    for (const f of r.files) {
      const s = await stat(f.file).catch(() => undefined);
      if (s) size += s.size;
      else present = false;
    }
    out.push({
      id: r.id,
      schedule: r.schedule,
      vm: r.vm,
      mode: r.mode,
      at: r.at,
      ageSeconds: Math.round((now.getTime() - Date.parse(r.at)) / 1000),
      size: r.files.length ? size : undefined,
      verified: r.verified,
      status: r.status === 'failed' ? 'failed' : 'ok',
      error: r.error,
      protected: r.protected,
      present,
    });
  }
  return out;
}

/** Checks existing copies again and records the result. */
export async function reverify(stateDir: string, schedule: string, passphrases?: Map<string, Secret>): Promise<BackupRun[]> {
  const records = await readBackupRecords(stateDir);
  const mine = records.runs.filter((r) => r.schedule === schedule && r.files.length);
  for (const r of mine) Object.assign(r, { verifyError: undefined }, await verifyFiles(r.files, { passphrases }));
  await writeBackupRecords(stateDir, records);
  return mine;
}

/**
 * Restores a backup. An internal snapshot is reverted. A copy is written back onto each
 * disk's image with the domain shut off; the previous image is kept aside until the
 * restored one compares equal to the backup, and put back if it does not.
 */
export async function restore(spec: BackupSpec, id: string, ctx: BackupContext & { backupPassphraseFile?: string }): Promise<void> {
  const records = await readBackupRecords(ctx.stateDir);
  const r = records.runs.find((x) => x.id === id && x.schedule === spec.name);
  if (!r) throw new UserError(`backups.${spec.name} has no backup ${id} (see \`reconcile backup list ${spec.name}\`)`);
  if (r.status === 'failed') throw new UserError(`backup ${id} failed (${r.error ?? 'no reason recorded'}); it holds nothing to restore`);
  const v = ctx.virsh;
  if (r.snapshot) {
    ctx.log(`restore: reverting ${r.vm} to internal snapshot ${r.snapshot}`);
    await revertSnapshot(v, r.vm, r.snapshot);
    return;
  }
  // An encrypted copy: opened with its disk's passphrase as it is now, or else with the one
  // given (a copy made before that disk's passphrase changed; a VM's disks may have different
  // passphrases, changed at different times); written back encrypted with the disk's own.
  const keys = new Map<string, { disk: Secret; copy: Secret }>();
  for (const f of r.files) {
    if (!f.encrypted) continue;
    const disk = passphraseOf(ctx, f.source, `disk ${f.target} (${f.source})`);
    const copy = [disk, ...(ctx.backupPassphraseFile ? [{ passphraseFile: ctx.backupPassphraseFile }] : [])];
    let opens: Secret | undefined;
    for (const c of copy) if (!opens && (await unlocks(f.file, 'qcow2', c.passphraseFile))) opens = c;
    if (!opens)
      throw new UserError(
        `${f.file} opens neither with ${copy.map((c) => c.passphraseFile).join(' nor with ')}${ctx.backupPassphraseFile ? '' : " (the disk's passphraseFile: was the passphrase changed after this backup was made? give the one it was made with: --passphrase-file FILE)"}; nothing was restored`,
      );
    keys.set(f.target, { disk, copy: opens });
  }
  if ((await domainState(v, r.vm)) !== 'shut off') {
    ctx.log(`restore: shutting ${r.vm} off (ACPI shutdown; destroyed if still running after 30 s); it stays off after the restore`);
    await shutOff(v, r.vm);
  }
  for (const f of r.files) {
    const aside = `${f.source}.before-restore-${stamp((ctx.now ?? (() => new Date()))())}`;
    const k = keys.get(f.target);
    const driver = driverOfDisk({ format: f.sourceFormat, secretUsage: k ? f.source : undefined });
    // Written into the image itself (qemu-img convert -n): it stays the same file, with its
    // format options, backing file and LUKS header (so its passphrase is the disk's own as it is
    // now) — the file reconcile made and recorded. A copy of it is kept aside until the
    // restored data compares equal to the backup, and put back in place if it does not.
    await sparseCopy(f.source, aside);
    try {
      await writeInto(
        { path: f.file, driver: 'qcow2', encryption: k?.copy },
        { path: f.source, format: formatOfDriver(f.sourceFormat) as Format, encryption: k?.disk, overwrite: true },
      );
      await compare({ path: f.file, driver: 'qcow2', encryption: k?.copy }, { path: f.source, driver, encryption: k?.disk });
    } catch (e) {
      await sparseCopy(aside, f.source);
      await rm(aside, { force: true });
      throw new Error(`restore of ${f.target} from ${f.file} did not complete; the previous image is back in place: ${(e as Error).message}`);
    }
    await rm(aside, { force: true });
    // libvirt keeps its own view of a pool's volumes: let it read the restored file.
    if (f.pool) await refreshPool(v, f.pool);
    ctx.log(`restore: ${f.target} (${f.source}) restored from ${path.basename(f.file)}`);
  }
}
