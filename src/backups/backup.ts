// Backups of declared VMs: run one now (hooks around it, verify, retention), list, verify
// again, restore, and which schedules are overdue. Schedules fire from `reconcile watch`.
import { chmod, mkdir, mkdtemp, readdir, readFile, rename, rm, stat, writeFile } from 'node:fs/promises';
import path from 'node:path';
import { runHook } from '../tools/hooks.js';
import {
  bitmapsOf,
  check as checkImage,
  compare,
  convertCopy,
  convertInto as writeInto,
  create,
  info,
  removeBitmap,
  rewriteOverlay,
  setBacking,
  unlocks,
  type Secret,
} from '../tools/qemu-img.js';
import type { Format } from '../reconcile/model.js';
import { sparseCopy } from '../tools/copy.js';
import { formatOfDriver } from '../providers/image/formats.js';
import { backupDisk, modeProblems } from '../providers/backup/modes.js';
import {
  abortBackupJob,
  createInternalSnapshot,
  deleteCheckpoint,
  deleteSnapshot,
  destroyDomain,
  domainId,
  domainState,
  freeze,
  hasManagedSave,
  inactiveXml,
  listCheckpoints,
  pushBackup,
  revertSnapshot,
  shutOff,
  startPaused,
  thaw,
  withExternalSnapshot,
} from '../tools/libvirt-backup.js';
import { defineDomain, domainExists, readDisks } from '../tools/libvirt-domain.js';
import { refreshPool } from '../tools/libvirt-pool.js';
import { volumePath } from '../tools/libvirt-volume.js';
import { libvirtMessage, type Virsh } from '../tools/virsh.js';
import { readBackupRecords, stamp, writeBackupRecords, type BackupFile, type BackupRecords, type BackupRun, type InProgress } from './records.js';
import { retention, type Verdict } from './retention.js';
import { consecutiveFailures, scheduleDigest } from './suspension.js';
import { fetchMissing, removeOffsite, sendOffsite } from './offsite.js';
import { UserError } from '../reconcile/errors.js';
import { failpoint } from '../failpoint.js';
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

async function domainDisks(v: Virsh, spec: Pick<BackupSpec, 'vm' | 'disks' | 'mode'>): Promise<{ running: boolean; state: string; all: string[]; disks: DiskSource[] }> {
  const { vm, disks: want } = spec;
  const state = await domainState(v, vm).catch((e: Error) => {
    if (/failed to get domain|no domain with matching/i.test(e.message)) throw new UserError(`domain ${vm} is not defined: \`reconcile apply\` defines it as the YAML declares it`);
    throw e;
  });
  const running = state === 'running' || state === 'paused';
  // Disks of this host only: a network disk's data lives on its server (backed up there).
  const devices = (await readDisks(v, vm, running)).filter((d) => d.device === 'disk' && d.type !== 'network');
  const missing = (want ?? []).filter((t) => !devices.some((d) => d.target === t));
  if (missing.length) throw new UserError(`domain ${vm} has no disk ${missing.join(', ')} (it has: ${devices.map((d) => d.target).join(', ')})`);
  // The same check as plan's, on the domain as it is now: nothing is started for a mode that cannot work.
  const problems = modeProblems(spec, devices.map(backupDisk));
  if (problems.length) throw new UserError(problems.join('\n'));
  const disks: DiskSource[] = [];
  for (const d of devices) {
    if (want && !want.includes(d.target)) continue;
    const p = d.type === 'volume' ? await volumePath(v, d.source.pool!, d.source.volume!) : (d.source.file ?? d.source.dev);
    if (!p) throw new Error(`${vm}: disk ${d.target} has no local source to back up`);
    const secretUsage = d.encryption?.format === 'luks' ? (d.encryption.secretUsage ?? p) : undefined;
    disks.push({ target: d.target, path: p, format: d.driverType ?? 'raw', pool: d.type === 'volume' ? d.source.pool : undefined, secretUsage });
  }
  return { running, state, all: devices.map((d) => d.target), disks };
}

/**
 * A copy made under a temporary name and renamed when complete. An encrypted disk's copy is
 * encrypted with the same passphrase (LUKS in qcow2): a backup never holds its data in clear.
 */
async function convertInto(d: DiskSource, dest: string, forceShare: boolean, ctx: BackupContext): Promise<void> {
  const partial = `${dest}.partial`;
  const encryption = diskEncryption(ctx, d);
  await convertCopy({ path: d.path, driver: driverOfDisk(d), forceShare, encryption }, { path: partial, driver: 'qcow2', encryption });
  await seal(partial, dest);
}

/**
 * A complete copy put in place under its name, readable by root only: it holds a disk's data
 * (qemu-img and libvirt make files as the umask says, usually readable by all).
 */
async function seal(partial: string, dest: string): Promise<void> {
  await chmod(partial, 0o600);
  await rename(partial, dest);
}

export async function runBackup(spec: BackupSpec, ctx: BackupContext): Promise<BackupRun> {
  const v = ctx.virsh;
  const now = (ctx.now ?? (() => new Date()))();
  const id = `${spec.name}-${stamp(now)}`;
  await recoverInterruptedRestore(ctx);
  await recoverInterrupted(spec, ctx);
  await forgetStaleSuspension(ctx.stateDir, spec);
  const records = await readBackupRecords(ctx.stateDir);
  if (records.suspended?.[spec.name]) ctx.log(`backups.${spec.name} is suspended (its schedule does not run it); this run is by hand, and ends the suspension if it succeeds`);
  const ran: string[][] = [];
  const failed = { value: false };
  const progress: { startedPaused?: string } = {};
  try {
    const { running, state, all, disks } = await domainDisks(v, spec);
    await markInProgress(ctx.stateDir, spec, { id, vm: spec.vm, at: now.toISOString(), destination: spec.destination });
    for (const hook of spec.hooks.pre) {
      ran.push(hook);
      await runHook(hook, spec.hooks.timeoutSeconds);
    }
    const files: BackupFile[] = [];
    const fileFor = (d: DiskSource) => path.join(spec.destination!, `${id}-${d.target}.qcow2`);
    // QEMU (another user) writes push backups into it: it may pass through (x), not list it;
    // the copies themselves are root's alone once made (seal).
    if (spec.destination) await mkdir(spec.destination, { recursive: true, mode: 0o711 });
    ctx.log(`backups.${spec.name}: ${spec.mode} of ${spec.vm} (${disks.map((d) => d.target).join(', ')}${running ? `, ${state}` : ''})`);
    let chain: { parent?: BackupRun; note?: string } = {};
    if (spec.mode === 'snapshot') {
      // A running domain's internal snapshot is a full checkpoint, memory included: it is
      // consistent as it is, and a freeze would be captured too (a revert would bring back
      // a frozen guest). Quiesce serves the disk-only modes.
      if (spec.quiesce && running) ctx.log(`backups.${spec.name}: internal snapshot of a running domain includes its memory; no freeze needed`);
      await createInternalSnapshot(v, spec.vm, id, `virt-reconcile backups.${spec.name}`);
    } else if (spec.mode === 'incremental') {
      chain = await chainBase(spec, records, v, disks, running);
      if (chain.note) ctx.log(`backups.${spec.name}: ${chain.note}`);
      chain = await incrementalRun(spec, ctx, { id, running, all, disks, chain, fileFor, progress });
    } else if (running && spec.mode === 'copy') {
      // The copies are made here first, at the disks' size (libvirt then reuses them): an
      // encrypted one with the disk's passphrase and iterTime, and qemu-img's transient LUKS
      // failure is tried again (libvirt's own formatting of a target is neither).
      await makeTargets(disks, fileFor, ctx);
      await whileFrozen(spec, v, () =>
        pushBackup(
          v,
          spec.vm,
          disks.map((d) => ({ target: d.target, file: `${fileFor(d)}.partial`, secretUsage: d.secretUsage })),
          all,
        ),
      );
      for (const d of disks) await seal(`${fileFor(d)}.partial`, fileFor(d));
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
    if (spec.mode === 'incremental') Object.assign(result, { parent: chain.parent?.id, checkpoint: id, note: chain.note });
    // The definition goes with every copy: a domain that is gone can be defined again from it (`restore --vm`).
    if (spec.destination) result.domainXml = await saveDefinition(v, spec.vm, path.join(spec.destination, `${id}.domain.xml`));
    // An increment is only as good as what it is read through: its whole chain is checked.
    const below = chain.parent ? chainFiles(chain.parent, records.runs) : [];
    if (spec.verify && files.length) Object.assign(result, await verifyFiles([...files, ...below], ctx), { verifiedAt: new Date().toISOString() });
    const after = await readBackupRecords(ctx.stateDir);
    after.runs.push(result);
    if (result.verified !== false) {
      after.lastSuccess[spec.name] = result.at;
      // A run that succeeds ends a suspension (a manual `backup run` of a suspended schedule).
      delete after.suspended?.[spec.name];
      if (spec.mode === 'incremental') delete after.chainBroken?.[spec.name];
    }
    await writeBackupRecords(ctx.stateDir, after);
    ctx.log(
      `backups.${spec.name}: made ${id}${result.parent ? ` (incremental on ${result.parent})` : spec.mode === 'incremental' ? ' (full)' : ''}${result.verified === false ? ` — VERIFY FAILED: ${result.verifyError}` : result.verified ? ' (verified)' : ''}`,
    );
    await applyRetention(spec, ctx, now);
    if (spec.verifyEverySeconds !== undefined) await reverifyDue(spec, ctx, now);
    if (result.verified === false) throw new Error(`backup ${id} failed verification: ${result.verifyError}`);
    // Off the host once verified; a failure there fails the run (it is on record, and tried again next time).
    const offsite = spec.copyTo.length ? await sendOffsite(spec, ctx) : [];
    // Under way until sent everywhere: one killed while it sent is found by the next run.
    await updateRecords(ctx.stateDir, (x) => delete x.inProgress?.[spec.name]);
    if (offsite.length) throw new Error(`backup ${id} was made here, but ${offsite.join('; ')}`);
    return result;
  } catch (e) {
    failed.value = true;
    await recordFailure(spec, ctx, id, now, (e as Error).message);
    throw e;
  } finally {
    // Post hooks run whenever pre hooks ran (or there are none), even when the backup failed;
    // a post hook's failure is reported, and fails the run only if the backup itself succeeded.
    if (ran.length || !spec.hooks.pre.length) await runPostHooks(spec, ctx, failed);
  }
}

/** The backup copies of a running domain's push backup, made first at each disk's size. */
async function makeTargets(disks: DiskSource[], fileFor: (d: DiskSource) => string, ctx: BackupContext): Promise<void> {
  for (const d of disks) {
    const size = (await info(d.path))['virtual-size'];
    await create(`${fileFor(d)}.partial`, { format: 'qcow2', size, encryption: diskEncryption(ctx, d) });
  }
}

async function whileFrozen<T>(spec: BackupSpec, v: Virsh, fn: () => Promise<T>): Promise<T> {
  if (spec.quiesce) await freeze(v, spec.vm);
  try {
    return await fn();
  } finally {
    if (spec.quiesce) await thaw(v, spec.vm);
  }
}

/** A run is on record as under way until it ends: one still there was interrupted (killed). */
async function markInProgress(stateDir: string, spec: BackupSpec, mark: InProgress): Promise<void> {
  await updateRecords(stateDir, (r) => {
    r.inProgress = { ...r.inProgress, [spec.name]: { ...mark, pid: process.pid } };
  });
}

/**
 * What an interrupted run of this schedule left is cleaned up before the next: its backup job
 * (libvirt's goes on after its caller died) is aborted, a domain it started paused is stopped,
 * its half-made copies are removed, and it is on record as a failed run.
 */
async function recoverInterrupted(spec: BackupSpec, ctx: BackupContext): Promise<void> {
  const r = await readBackupRecords(ctx.stateDir);
  for (const [schedule, left] of Object.entries(r.inProgress ?? {})) {
    const v = ctx.virsh;
    const state = await domainState(v, left.vm).catch(() => undefined);
    if (state === 'running' || state === 'paused') await abortBackupJob(v, left.vm);
    // Only the instance that run started, still paused: a domain started since (a new id) is someone's.
    const instance = await domainId(v, left.vm).catch(() => undefined);
    if (left.startedPaused && state === 'paused' && (left.startedPaused === 'starting' || instance === left.startedPaused)) {
      ctx.log(`backups.${schedule}: ${left.vm} was left paused by the interrupted run ${left.id} (its guest never ran): stopping it`);
      await destroyDomain(v, left.vm);
    }
    if (!r.runs.some((x) => x.id === left.id)) await removeLeftovers(left.destination, left.id);
    ctx.log(`backups.${schedule}: the run ${left.id} was interrupted; what it left is removed`);
    const of = schedule === spec.name ? spec : { name: schedule, vm: left.vm, mode: r.runs.find((x) => x.schedule === schedule)?.mode ?? 'copy', destination: left.destination };
    await recordFailure(of, ctx, left.id, new Date(left.at), 'interrupted (the process running it ended before it finished)');
  }
}

/**
 * What a run that is not on record left in the destination: its half-made copies, and (killed
 * after they were complete but before the run was recorded) its copies and definition, which
 * nothing refers to.
 */
async function removeLeftovers(destination: string | undefined, id: string): Promise<void> {
  if (!destination) return;
  const names = await readdir(destination).catch(() => [] as string[]);
  for (const n of names) if (n.startsWith(`${id}-`) || n.startsWith(`${id}.domain.xml`) || n === `${id}.json`) await rm(path.join(destination, n), { force: true });
}

/** Half-made copies go; the run is recorded as failed (backup list shows it, with why). */
async function recordFailure(spec: BackupSpec | Pick<BackupSpec, 'name' | 'vm' | 'mode' | 'destination'>, ctx: BackupContext, id: string, at: Date, error: string): Promise<void> {
  const r = await readBackupRecords(ctx.stateDir);
  // A run on record (one that failed verification, or whose off-site copy failed) keeps its
  // files: backup list shows it, retention removes it. Its failure is later than its success.
  const onRecord = r.runs.some((x) => x.id === id);
  if (!onRecord) await removeLeftovers(spec.destination, id);
  r.lastFailure[spec.name] = { at: (onRecord ? new Date() : at).toISOString(), error };
  if (!onRecord) {
    r.runs.push({ id, schedule: spec.name, vm: spec.vm, mode: spec.mode, at: at.toISOString(), files: [], status: 'failed', error });
    // The failures kept on record are the newest few: each is also in lastFailure until a success.
    const failures = r.runs.filter((x) => x.schedule === spec.name && x.status === 'failed').sort((a, b) => b.at.localeCompare(a.at));
    const dropped = new Set(failures.slice(FAILED_RUNS_KEPT).map((x) => x.id));
    r.runs = r.runs.filter((x) => !dropped.has(x.id));
  }
  delete r.inProgress?.[spec.name];
  const failures = consecutiveFailures(r.runs, spec.name);
  // (A schedule no longer declared, whose interrupted run is recorded here, has no maxFailures.)
  if ('maxFailures' in spec && spec.maxFailures !== undefined && failures >= spec.maxFailures && !r.suspended?.[spec.name]) {
    r.suspended = { ...r.suspended, [spec.name]: { at: new Date().toISOString(), failures, digest: scheduleDigest(spec) } };
    ctx.log(
      `backups.${spec.name}: suspended after ${failures} failed runs in a row (maxFailures ${spec.maxFailures}); \`reconcile backup resume ${spec.name}\` or a change to it resumes it`,
    );
  }
  await writeBackupRecords(ctx.stateDir, r);
}

export { startDomain } from '../tools/libvirt-backup.js';

/** A suspension made under another version of the schedule is over for good (a revert does not bring it back). */
export async function forgetStaleSuspension(stateDir: string, spec: BackupSpec): Promise<void> {
  const r = await readBackupRecords(stateDir);
  const sus = r.suspended?.[spec.name];
  if (!sus || sus.digest === scheduleDigest(spec)) return;
  delete r.suspended![spec.name];
  await writeBackupRecords(stateDir, r);
}

/** `backup resume NAME`: the schedule runs again on its cron. */
export async function resumeSchedule(stateDir: string, name: string): Promise<boolean> {
  const r = await readBackupRecords(stateDir);
  if (!r.suspended?.[name]) return false;
  delete r.suspended[name];
  await writeBackupRecords(stateDir, r);
  return true;
}

/** Writes the domain's definition beside its copies (renamed into place when complete). */
async function saveDefinition(v: Virsh, vm: string, file: string): Promise<string> {
  await writeFile(`${file}.partial`, await inactiveXml(v, vm), { mode: 0o600 });
  await rename(`${file}.partial`, file);
  return file;
}

/** This schedule's checkpoints: named by its backups' ids, NAME-YYYYMMDDTHHMMSSmmmZ. */
const ownCheckpoint = (schedule: string, name: string) => name.startsWith(`${schedule}-`) && /^\d{8}T\d{9}Z$/.test(name.slice(schedule.length + 1));

/** Every file a backup is read through (its own, and those of the backups it depends on). */
const chainFiles = (r: BackupRun, runs: BackupRun[]) => (chainOf(r, runs) ?? [r]).flatMap((x) => x.files);

/** A backup and the ones it depends on, newest first (up to a full one); undefined if one of them is gone. */
export function chainOf(run: BackupRun, runs: BackupRun[]): BackupRun[] | undefined {
  const out = [run];
  let cur = run;
  while (cur.parent) {
    const p = runs.find((r) => r.id === cur.parent);
    if (!p || out.includes(p)) return undefined;
    out.push(p);
    cur = p;
  }
  return out;
}

/**
 * Where an incremental run starts from: the last backup of the schedule when its chain can go
 * on (its checkpoint is still in libvirt, its bitmap in every disk, the same disks, every file
 * of the chain present), else nothing and why — a full backup then, never a silent gap.
 */
async function chainBase(spec: BackupSpec, records: BackupRecords, v: Virsh, disks: DiskSource[], running: boolean): Promise<{ parent?: BackupRun; note?: string }> {
  const prev = records.runs.filter((r) => r.schedule === spec.name && r.status !== 'failed' && r.mode === 'incremental').sort((a, b) => b.at.localeCompare(a.at))[0];
  if (!prev) return {};
  const full = (why: string) => ({ note: `a new full backup: ${why}` });
  const broken = records.chainBroken?.[spec.name];
  if (broken) return full(broken);
  const chain = chainOf(prev, records.runs);
  if (!chain) return full(`a backup that ${prev.id} depends on is no longer on record`);
  const bad = chain.find((r) => r.verified === false);
  if (bad) return full(`${bad.id}, which the chain is read through, failed verification (${bad.verifyError})`);
  if (chain.length >= spec.fullEvery) return full(`the chain holds ${chain.length} backups (fullEvery: ${spec.fullEvery})`);
  // A chain lives in one directory (its backing names are relative): it can be moved as one.
  if (prev.files.some((f) => path.dirname(f.file) !== path.resolve(spec.destination!))) return full(`the destination changed since ${prev.id}`);
  if (!prev.checkpoint || !(await listCheckpoints(v, spec.vm)).includes(prev.checkpoint))
    return full(`the checkpoint of ${prev.id} is gone from ${spec.vm} (was the domain defined again?)`);
  const same = disks.length === prev.files.length && disks.every((d) => prev.files.some((f) => f.target === d.target && f.source === d.path));
  if (!same) return full(`the disks backed up changed since ${prev.id}`);
  for (const r of chain) for (const f of r.files) if (!(await stat(f.file).catch(() => undefined))) return full(`${f.file} (of ${r.id}) is missing`);
  // A disk at rest holds its bitmaps in the file; a running QEMU keeps them in memory until it
  // closes the disk, so for a running domain libvirt's own check at backup-begin decides (a
  // refusal there is a full backup too, see incrementalRun).
  if (!running)
    for (const d of disks) {
      const bitmap = bitmapsOf(await info(d.path, 'qcow2')).find((b) => b.name === prev.checkpoint);
      if (!bitmap || bitmap.flags.includes('in-use'))
        return full(`disk ${d.target} (${d.path}) has no usable change record since ${prev.id} (the image was replaced, or not closed cleanly)`);
    }
  return { parent: prev };
}

/**
 * An incremental run: a push backup that makes a checkpoint, copying everything (full) or only
 * what changed since the parent's checkpoint into a qcow2 file backed by the parent's (so each
 * backup reads as the whole disk of its time). A shut-off domain is started paused for it;
 * only the newest checkpoint of the schedule is kept (each is a bitmap every write updates).
 * Returns the chain it continued (or why it took a full backup after all).
 */
async function incrementalRun(
  spec: BackupSpec,
  ctx: BackupContext,
  o: {
    id: string;
    running: boolean;
    all: string[];
    disks: DiskSource[];
    chain: { parent?: BackupRun; note?: string };
    fileFor: (d: DiskSource) => string;
    progress: { startedPaused?: string };
  },
): Promise<{ parent?: BackupRun; note?: string }> {
  const v = ctx.virsh;
  let chain = o.chain;
  await makeTargets(o.disks, o.fileFor, ctx);
  if (!o.running) {
    if (await hasManagedSave(v, spec.vm))
      throw new UserError(`${spec.vm} has a saved state (managedsave): starting it for the backup would resume that guest; start it or remove the saved state, then run again`);
    // Bitmaps of this schedule that libvirt no longer knows as checkpoints (the domain was
    // defined again, or its metadata dropped) would be updated by every write for nothing: at
    // rest, before QEMU opens the disks, they go.
    const known = new Set(await listCheckpoints(v, spec.vm));
    for (const d of o.disks)
      for (const b of bitmapsOf(await info(d.path, 'qcow2')))
        if (ownCheckpoint(spec.name, b.name) && !known.has(b.name)) {
          await removeBitmap(d.path, b.name);
          ctx.log(`backups.${spec.name}: removed the stale change record ${b.name} from ${d.path} (libvirt no longer has its checkpoint)`);
        }
    const mark = { id: o.id, vm: spec.vm, at: new Date().toISOString(), destination: spec.destination };
    // 'starting' covers the instant between the start and knowing the new instance's id.
    await markInProgress(ctx.stateDir, spec, { ...mark, startedPaused: 'starting' });
    ctx.log(`backups.${spec.name}: ${spec.vm} is shut off: started paused for the backup (its guest does not run)`);
    o.progress.startedPaused = await startPaused(v, spec.vm);
    await markInProgress(ctx.stateDir, spec, { ...mark, startedPaused: o.progress.startedPaused });
  }
  try {
    const targets = o.disks.map((d) => ({ target: d.target, file: `${o.fileFor(d)}.partial` }));
    const backup = async () => {
      try {
        await pushBackup(v, spec.vm, targets, o.all, { checkpoint: o.id, incremental: chain.parent?.checkpoint });
      } catch (e) {
        // libvirt refuses a checkpoint whose bitmap the running QEMU lacks or holds broken
        // ("missing or broken bitmap"): a full backup instead, said — never a gap.
        if (!chain.parent || !/bitmap/i.test((e as Error).message)) throw e;
        chain = { note: `a new full backup: libvirt cannot copy the changes since ${chain.parent.id}: ${libvirtMessage(e)}` };
        ctx.log(`backups.${spec.name}: ${chain.note}`);
        await makeTargets(o.disks, o.fileFor, ctx);
        await pushBackup(v, spec.vm, targets, o.all, { checkpoint: o.id });
      }
    };
    await (o.running ? whileFrozen(spec, v, backup) : backup());
    failpoint('backup-copied');
    if (chain.parent)
      for (const d of o.disks) {
        const base = chain.parent.files.find((f) => f.target === d.target)!.file;
        await setBacking(`${o.fileFor(d)}.partial`, path.relative(path.dirname(o.fileFor(d)), base), 'qcow2');
      }
    for (const d of o.disks) await seal(`${o.fileFor(d)}.partial`, o.fileFor(d));
    for (const cp of await listCheckpoints(v, spec.vm))
      if (cp !== o.id && ownCheckpoint(spec.name, cp))
        await deleteCheckpoint(v, spec.vm, cp).catch(async (e: Error) => {
          // Its bitmap is gone (the image was replaced, QEMU died): only libvirt's record of it is left.
          if (/not found|no such|missing/i.test(e.message)) await deleteCheckpoint(v, spec.vm, cp, { metadataOnly: true }).catch(() => undefined);
          else ctx.log(`backups.${spec.name}: could not delete the older checkpoint ${cp}: ${e.message}`);
        });
  } finally {
    if (o.progress.startedPaused) await stopStartedPaused(spec, ctx, o.progress.startedPaused);
    o.progress.startedPaused = undefined;
  }
  return chain;
}

/**
 * Stops the instance a run started paused, if it still is that instance and still paused: a
 * guest someone resumed meanwhile is running for real and is left running (said).
 */
async function stopStartedPaused(spec: BackupSpec, ctx: BackupContext, instance: string): Promise<void> {
  const v = ctx.virsh;
  const [state, id] = await Promise.all([domainState(v, spec.vm), domainId(v, spec.vm).catch(() => undefined)]);
  if (state === 'paused' && id === instance) await destroyDomain(v, spec.vm);
  else if (state !== 'shut off') ctx.log(`backups.${spec.name}: ${spec.vm} was resumed during the backup (it is ${state}): left as it is`);
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

async function verifyFiles(
  files: BackupFile[],
  ctx: Pick<BackupContext, 'passphrases'>,
  /** leaked clusters only waste space: a restore may read through them */
  o: { leaksOk?: boolean } = {},
): Promise<{ verified: boolean; verifyError?: string }> {
  for (const f of files) {
    // An encrypted copy's metadata is read through its passphrase (its disk's, as it is now).
    const encryption = f.encrypted ? ctx.passphrases?.get(f.source) : undefined;
    if (f.encrypted && !encryption) return { verified: false, verifyError: `${f.file} is encrypted, and no declared image at ${f.source} gives its passphraseFile` };
    const r = await checkImage(f.file, { inUse: false, driver: 'qcow2', encryption });
    const bad =
      r.error ?? (r.corruptions || (r.leaks && !o.leaksOk) || r.checkErrors ? `${r.corruptions} corruption(s), ${r.leaks} leak(s), ${r.checkErrors} check error(s)` : undefined);
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
    if (r.domainXml) await rm(r.domainXml, { force: true });
    ctx.log(`backups.${spec.name}: retention deleted ${r.id}`);
  }
  // Removed at each place too; what cannot be removed yet is remembered in these records.
  await removeOffsite(spec, doomed, ctx, records);
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
  /** every file it is read through is here (an incremental backup's whole chain) */
  present: boolean;
  /** not present: its own copy is missing, or (its own copy here) a backup it is read through */
  missing?: 'copy' | 'base';
  /** incremental: the backup it holds the changes since */
  parent?: string;
  /** why it is a full backup of an incremental schedule, when the chain could not go on */
  note?: string;
  /** off-site copies (copyTo), by place: when complete there, or why not */
  copies?: Record<string, { at?: string; error?: string }>;
}

export async function listBackups(stateDir: string, schedule?: string, now = new Date()): Promise<BackupListing[]> {
  const records = await readBackupRecords(stateDir);
  const out: BackupListing[] = [];
  for (const r of records.runs.filter((x) => !schedule || x.schedule === schedule).sort((a, b) => a.at.localeCompare(b.at))) {
    let size = 0;
    let missing: 'copy' | 'base' | undefined;
    for (const f of r.files) {
      const s = await stat(f.file).catch(() => undefined);
      if (s) size += s.size;
      else missing = 'copy';
    }
    // An increment cannot be read without its bases.
    const chain = chainOf(r, records.runs);
    if (!missing && !chain) missing = 'base';
    else if (!missing) for (const c of chain!.slice(1)) for (const f of c.files) if (!(await stat(f.file).catch(() => undefined))) missing = 'base';
    const present = r.status !== 'failed' && !missing;
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
      missing,
      parent: r.parent,
      note: r.note,
      copies: r.copies,
    });
  }
  return out;
}

/** Checks existing copies again and records the result. */
export async function reverify(stateDir: string, schedule: string, passphrases?: Map<string, Secret>): Promise<BackupRun[]> {
  const records = await readBackupRecords(stateDir);
  const mine = records.runs.filter((r) => r.schedule === schedule && r.files.length);
  for (const r of mine) Object.assign(r, { verifyError: undefined, verifiedAt: new Date().toISOString() }, await verifyFiles(chainFiles(r, records.runs), { passphrases }));
  await writeBackupRecords(stateDir, records);
  return mine;
}

/**
 * `verify.every`: the copies of this schedule whose last check is older than that are checked
 * again (as Proxmox Backup Server re-verifies); a failure is recorded on the backup (backup
 * list, plan) and logged.
 */
async function reverifyDue(spec: BackupSpec, ctx: BackupContext, now: Date): Promise<void> {
  const records = await readBackupRecords(ctx.stateDir);
  const due = records.runs.filter((r) => r.schedule === spec.name && r.files.length && now.getTime() - Date.parse(r.verifiedAt ?? r.at) > spec.verifyEverySeconds! * 1000);
  if (!due.length) return;
  for (const r of due) {
    Object.assign(r, { verifyError: undefined, verifiedAt: new Date().toISOString() }, await verifyFiles(chainFiles(r, records.runs), ctx));
    ctx.log(`backups.${spec.name}: re-verified ${r.id}: ${r.verified ? 'ok' : `FAILED: ${r.verifyError}`}`);
  }
  await writeBackupRecords(ctx.stateDir, records);
}

/**
 * `backup verify NAME --restore`: the newest backup restored to a scratch directory beside the
 * copies (compared with the backup as restore --to does, then checked with qemu-img check),
 * then removed; the result is recorded on the backup.
 */
export async function verifyByRestore(spec: BackupSpec, ctx: BackupContext): Promise<BackupRun> {
  const records = await readBackupRecords(ctx.stateDir);
  const r = records.runs.filter((x) => x.schedule === spec.name && x.status !== 'failed' && x.files.length).sort((a, b) => b.at.localeCompare(a.at))[0];
  if (!r) throw new UserError(`backups.${spec.name} has no copy to restore (${spec.mode === 'snapshot' ? 'mode snapshot keeps internal snapshots' : 'no backup yet'})`);
  const scratch = await mkdtemp(path.join(spec.destination!, `.verify-restore-${r.id}-`));
  let error: string | undefined;
  try {
    const chain = chainOf(r, records.runs);
    if (!chain) throw new Error('a backup it depends on is no longer on record');
    // (Quiet: the files it writes are removed at once.)
    const written = await restoreTo(r, scratch, await copyKeys(r, ctx), { ...ctx, log: () => undefined }, { dir: true });
    for (const [i, f] of written.entries()) {
      const source = r.files[i]!;
      const c = await checkImage(f, {
        inUse: false,
        driver: source.encrypted ? 'qcow2' : source.sourceFormat,
        encryption: source.encrypted ? ctx.passphrases?.get(source.source) : undefined,
      });
      const bad = c.error ?? (c.corruptions || c.checkErrors ? `${c.corruptions} corruption(s), ${c.checkErrors} check error(s)` : undefined);
      if (bad) throw new Error(`the restored ${source.target}: ${bad}`);
    }
  } catch (e) {
    error = (e as Error).message;
  } finally {
    await rm(scratch, { recursive: true, force: true });
  }
  const after = await readBackupRecords(ctx.stateDir);
  const rec = after.runs.find((x) => x.id === r.id);
  if (rec) Object.assign(rec, { restoreVerifiedAt: new Date().toISOString(), restoreVerifyError: error });
  await writeBackupRecords(ctx.stateDir, after);

  return { ...r, restoreVerifiedAt: rec?.restoreVerifiedAt, restoreVerifyError: error };
}

export interface RestoreOptions {
  /** the passphrase an encrypted copy was made with, if not its disk's current one */
  backupPassphraseFile?: string;
  /** define the domain again from the backup's definition (it must be gone), then restore its disks */
  vm?: boolean;
  /** restore to this path (a directory when the backup has several disks) for inspection: the VM is not touched */
  to?: string;
}

/**
 * Restores a backup. An internal snapshot is reverted. A copy is written back onto each
 * disk's image with the domain shut off; the previous image is kept aside until the
 * restored one compares equal to the backup, and put back if it does not. With `to`, the
 * copies are written to new files instead; with `vm`, a domain that is gone is defined again first.
 */
export async function restore(spec: BackupSpec, id: string, ctx: BackupContext & RestoreOptions): Promise<string[]> {
  const records = await readBackupRecords(ctx.stateDir);
  const r = records.runs.find((x) => x.id === id && x.schedule === spec.name);
  if (!r) throw new UserError(`backups.${spec.name} has no backup ${id} (see \`reconcile backup list ${spec.name}\`)`);
  if (r.status === 'failed') throw new UserError(`backup ${id} failed (${r.error ?? 'no reason recorded'}); it holds nothing to restore`);
  const v = ctx.virsh;
  if (r.snapshot) {
    if (ctx.to || ctx.vm) throw new UserError(`backup ${id} is an internal snapshot inside ${r.vm}'s images: --to and --vm need a copy (modes copy, external, incremental)`);
    ctx.log(`restore: reverting ${r.vm} to internal snapshot ${r.snapshot}`);
    await revertSnapshot(v, r.vm, r.snapshot);
    return [];
  }
  // Everything is checked before anything changes: each file of the backup (and of the chain it
  // is read through) is there, and each encrypted copy opens.
  const chain = chainOf(r, records.runs);
  if (!chain) throw new UserError(`backup ${id} is incremental, and a backup it depends on is no longer on record; nothing was restored`);
  await fetchMissing(spec, chain, ctx);
  for (const c of chain) for (const f of c.files) if (!(await stat(f.file).catch(() => undefined))) throw new UserError(`${f.file} (of ${c.id}) is missing; nothing was restored`);
  // The copies are checked before they are trusted: a restore compares the result with the
  // backup it read, which cannot see a damaged file of the chain (both read through it).
  // (Encrypted copies are opened and checked by copyKeys and the compare.)
  const damaged = await verifyFiles(
    chain.flatMap((c) => c.files).filter((f) => !f.encrypted),
    ctx,
    { leaksOk: true },
  );
  if (!damaged.verified) throw new UserError(`backup ${id} cannot be restored as it was made: ${damaged.verifyError}; nothing was restored`);
  const keys = await copyKeys(r, ctx);
  if (ctx.to) return restoreTo(r, ctx.to, keys, ctx);
  if (await hasManagedSave(v, r.vm).catch(() => false))
    throw new UserError(
      `${r.vm} has a saved state (managedsave): its memory would be resumed over the restored disks. Remove it first (\`virsh managedsave-remove ${r.vm}\`); nothing was restored`,
    );
  await recoverInterruptedRestore(ctx);
  // An image that is gone is made again by apply, as the YAML declares it (format, options,
  // owner, inventory) — a copy made here would be one reconcile did not create, and the next
  // plan would refuse it. Then restore writes the backup into it.
  for (const f of r.files)
    if (!(await stat(f.source).catch(() => undefined)))
      throw new UserError(
        `${f.source} (disk ${f.target}) is gone: \`reconcile apply\` makes it again as the YAML declares it${ctx.vm ? ' (and defines the domain again, if the YAML declares it)' : ''}, then \`reconcile restore ${spec.name} --from ${id}\` writes the backup into it; nothing was restored`,
      );
  if (ctx.vm) {
    if (!r.domainXml || !(await stat(r.domainXml).catch(() => undefined)))
      throw new UserError(
        `backup ${id} holds no domain definition${r.domainXml ? ` (${r.domainXml} is missing)` : ' (it was made before definitions were saved with each backup)'}; nothing was restored`,
      );
    if (await domainExists(v, r.vm)) throw new UserError(`domain ${r.vm} exists: --vm defines a domain that is gone. Without --vm, the disks are restored into it`);
    await defineDomain(v, await readFile(r.domainXml, 'utf8'));
    ctx.log(`restore: defined ${r.vm} again from ${path.basename(r.domainXml)}`);
  }
  if ((await domainState(v, r.vm)) !== 'shut off') {
    ctx.log(`restore: shutting ${r.vm} off (ACPI shutdown; destroyed if still running after 30 s); it stays off after the restore`);
    await shutOff(v, r.vm);
  }
  await updateRecords(ctx.stateDir, (x) => {
    x.restoring = { id, vm: r.vm, asides: [] };
  });
  try {
    for (const f of r.files) {
      const k = keys.get(f.target);
      await restoreInPlace(f, k, ctx);
    }
  } finally {
    // Done (or failed with every image put back): nothing to undo. Killed: the record stays.
    const x = await readBackupRecords(ctx.stateDir);
    const left = [];
    for (const a of x.restoring?.asides ?? []) if (await stat(a.aside).catch(() => undefined)) left.push(a);
    if (!left.length) {
      delete x.restoring;
      await writeBackupRecords(ctx.stateDir, x);
    }
  }
  // The disks were written behind the checkpoints' back: the next incremental run is a full one.
  const after = await readBackupRecords(ctx.stateDir);
  for (const b of records.runs.filter((x) => x.vm === r.vm && x.mode === 'incremental'))
    after.chainBroken = { ...after.chainBroken, [b.schedule]: `${r.vm}'s disks were restored from ${id}` };
  await writeBackupRecords(ctx.stateDir, after);
  return r.files.map((f) => f.source);
}

/** For each encrypted copy: the passphrase that opens it and the disk's own; refused before anything is touched. */
async function copyKeys(r: BackupRun, ctx: BackupContext & RestoreOptions): Promise<Map<string, { disk: Secret; copy: Secret }>> {
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
  return keys;
}

/** The file name extension of a restored image in this (qemu driver) format. */
const extensionOf = (driver: string) => (driver === 'raw' ? 'img' : formatOfDriver(driver));

/**
 * `restore --to PATH`: each disk as it was in the backup, in a new file (never over an existing
 * one): PATH itself for a one-disk backup, else PATH/ID-TARGET.EXT. The whole disk, even from
 * an incremental backup (read through its chain); an encrypted one stays encrypted with its disk's passphrase.
 */
async function restoreTo(r: BackupRun, to: string, keys: Map<string, { disk: Secret; copy: Secret }>, ctx: BackupContext, o: { dir?: boolean } = {}): Promise<string[]> {
  const target = path.resolve(to);
  const existing = await stat(target).catch(() => undefined);
  // A directory: one that is there, or a path written with a trailing slash.
  const isDir = o.dir || existing?.isDirectory() || /\/$/.test(to);
  if (r.files.length > 1 && existing && !existing.isDirectory()) throw new UserError(`${target} is a file: backup ${r.id} has ${r.files.length} disks, so --to names a directory`);
  if ((r.files.length > 1 || isDir) && !existing) await mkdir(target, { recursive: true, mode: 0o700 });
  const out: string[] = [];
  const dests = r.files.map((f) => {
    const k = keys.get(f.target);
    const driver = k ? 'qcow2' : f.sourceFormat;
    return { f, k, driver, dest: r.files.length > 1 || isDir ? path.join(target, `${r.id}-${f.target}.${extensionOf(driver)}`) : target };
  });
  for (const d of dests) if (await stat(d.dest).catch(() => undefined)) throw new UserError(`${d.dest} exists; restore --to never writes over a file: choose a new path`);
  for (const { f, k, driver, dest } of dests) {
    const partial = `${dest}.partial`;
    try {
      await convertCopy({ path: f.file, driver: 'qcow2', encryption: k?.copy }, { path: partial, driver, encryption: k?.disk });
      await compare({ path: f.file, driver: 'qcow2', encryption: k?.copy }, { path: partial, driver, encryption: k?.disk });
      await seal(partial, dest);
    } catch (e) {
      await rm(partial, { force: true });
      throw e;
    }
    ctx.log(`restore: ${f.target} of ${r.vm} as it was at ${r.at} written to ${dest}`);
    out.push(dest);
  }
  return out;
}

/**
 * Written into the image itself (qemu-img convert -n): it stays the same file, with its format
 * options, backing file and LUKS header (so its passphrase is the disk's own as it is now) —
 * the file reconcile made and recorded. A copy of it is kept aside until the restored data
 * compares equal to the backup, and put back in place if it does not.
 */
async function restoreInPlace(f: BackupFile, k: { disk: Secret; copy: Secret } | undefined, ctx: BackupContext): Promise<void> {
  const aside = `${f.source}.before-restore-${stamp((ctx.now ?? (() => new Date()))())}`;
  const driver = driverOfDisk({ format: f.sourceFormat, secretUsage: k ? f.source : undefined });
  // On record before the copy is made, and complete under its name only once made: a restore
  // killed at any point is undone by the next (recoverInterruptedRestore), never half-done.
  await updateRecords(ctx.stateDir, (r) => r.restoring?.asides.push({ source: f.source, aside, pool: f.pool }));
  await sparseCopy(f.source, `${aside}.partial`);
  await rename(`${aside}.partial`, aside);
  // An overlay (a plain qcow2 with a backing file) is restored as an overlay on its base: only
  // what differs from the base as it is now is written into it, so it stays the small file
  // the YAML declares (written whole, it would hold the whole disk). The data is the backup's
  // either way, whatever the base holds now: the comparison below checks it.
  const inf = !k && f.sourceFormat === 'qcow2' ? await info(f.source, 'qcow2') : undefined;
  // (An image with an external data file keeps its data there: written whole, as any other.)
  const overlay = inf?.['format-specific']?.data?.['data-file'] ? undefined : inf?.['backing-filename'];
  try {
    if (overlay) await rewriteOverlay(f.source, { path: f.file, driver: 'qcow2' });
    else
      await writeInto(
        { path: f.file, driver: 'qcow2', encryption: k?.copy },
        { path: f.source, format: formatOfDriver(f.sourceFormat) as Format, encryption: k?.disk, overwrite: true },
      );
    failpoint('restore-written');
    await compare({ path: f.file, driver: 'qcow2', encryption: k?.copy }, { path: f.source, driver, encryption: k?.disk });
  } catch (e) {
    await sparseCopy(aside, f.source);
    await rm(aside, { force: true });
    throw new Error(`restore of ${f.target} from ${f.file} did not complete; the previous image is back in place: ${(e as Error).message}`);
  }
  await rm(aside, { force: true });
  // libvirt keeps its own view of a pool's volumes: let it read the restored file.
  if (f.pool) await refreshPool(ctx.virsh, f.pool);
  ctx.log(`restore: ${f.target} (${f.source}) restored from ${path.basename(f.file)}${overlay ? ` as an overlay on ${overlay} (what differs from it)` : ''}`);
}

async function updateRecords(stateDir: string, change: (r: BackupRecords) => void): Promise<void> {
  const r = await readBackupRecords(stateDir);
  change(r);
  await writeBackupRecords(stateDir, r);
}

/**
 * A restore that was killed while it wrote into images is undone: each image whose copy as it
 * was before is complete gets it back (it may be half-written); a half-made copy goes. Run
 * before every restore and backup run.
 */
export async function recoverInterruptedRestore(ctx: Pick<BackupContext, 'stateDir' | 'log' | 'virsh'>): Promise<void> {
  const r = await readBackupRecords(ctx.stateDir);
  if (!r.restoring) return;
  for (const a of r.restoring.asides) {
    if (await stat(a.aside).catch(() => undefined)) {
      await sparseCopy(a.aside, a.source);
      if (a.pool) await refreshPool(ctx.virsh, a.pool).catch(() => undefined);
      ctx.log(`restore: the restore of ${r.restoring.id} was interrupted: ${a.source} is back as it was before it (run the restore again)`);
    }
    await rm(a.aside, { force: true });
    await rm(`${a.aside}.partial`, { force: true });
  }
  delete r.restoring;
  await writeBackupRecords(ctx.stateDir, r);
}
