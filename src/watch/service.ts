// `reconcile watch`: the long-lived, level-triggered loop. Every interval (and on a file
// change, a git webhook, or a schedule) it reads the desired state, observes, plans and
// applies — one reconcile at a time, under the same lock as `apply`. A revision that fails
// validation is not applied: the last good one stays in force and keeps being enforced.
import { createHash } from 'node:crypto';
import { readFile } from 'node:fs/promises';
import path from 'node:path';
import { watch as chokidar, type FSWatcher } from 'chokidar';
import { Cron } from 'croner';
import type { Virsh } from '../providers/virsh.js';
import { applyPlan } from '../reconcile/apply.js';
import { overdue, runBackup } from '../reconcile/backup.js';
import { readBackupRecords } from '../reconcile/backup-records.js';
import { loadDesiredState } from '../reconcile/config.js';
import { planWithObservations } from '../reconcile/engine.js';
import { ConfigErrors } from '../reconcile/errors.js';
import { expandPaths } from '../reconcile/load.js';
import { FileObservationCache } from '../reconcile/inventory.js';
import { acquireLock } from '../reconcile/lock.js';
import type { DesiredState } from '../reconcile/model.js';
import { renderPlan } from '../render.js';
import { imageStatuses, poolStatuses, vmStatuses, type ImageStatus, type PoolStatus, type VmStatus } from '../show.js';
import { syncGit, type GitSource } from './git-source.js';
import type { Metrics } from './metrics.js';

export interface WatchOptions {
  files: string[];
  git?: Omit<GitSource, 'dir'>;
  stateDir: string;
  intervalSeconds: number;
  allowReplace: boolean;
  prune: boolean;
  parallelism: number;
  suspended: boolean;
  virsh: (yamlUri?: string) => Virsh;
  metrics: Metrics;
  log: (line: string) => void;
}

export interface WatchStatus {
  ready: boolean;
  suspended: boolean;
  source: string;
  /** the revision in force (last one that validated and applied) */
  appliedRevision?: string;
  /** the newest revision seen, when it differs (rejected) */
  rejectedRevision?: { revision: string; at: string; error: string };
  lastReconcile?: { at: string; revision?: string; ok: boolean; durationSeconds: number; summary: string; error?: string };
  lastSuccessAt?: string;
  consecutiveFailures: number;
  nextReconcileAt?: string;
  driftCorrections: number;
  images: ImageStatus[];
  pools: PoolStatus[];
  vms: VmStatus[];
  backups: { name: string; vm: string; schedule: string; lastSuccess?: string; lastFailure?: { at: string; error: string }; nextRun?: string }[];
  notes: string[];
}

const MAX_BACKOFF_SECONDS = 600;

export class WatchService {
  readonly status: WatchStatus;
  private lastGood?: { state: DesiredState; revision: string };
  private timer?: NodeJS.Timeout;
  private running?: Promise<void>;
  private again = false;
  private stopping = false;
  private readonly abort = new AbortController();
  private watcher?: FSWatcher;
  private crons: Cron[] = [];
  private debounce?: NodeJS.Timeout;
  private firstSuccess = false;
  /** the backup schedules the croner jobs were made for, to remake them only on change */
  private scheduleKey?: string;

  constructor(private readonly opts: WatchOptions) {
    this.status = {
      ready: false, suspended: opts.suspended, consecutiveFailures: 0, driftCorrections: 0,
      source: opts.git ? `${opts.git.url} (${opts.git.ref}${opts.git.subdir ? `, ${opts.git.subdir}` : ''})` : opts.files.join(', '),
      images: [], pools: [], vms: [], backups: [], notes: [],
    };
  }

  async start(): Promise<void> {
    if (!this.opts.git) {
      // Debounced: an editor's save is several events; one reconcile follows them.
      this.watcher = chokidar(this.opts.files, { ignoreInitial: true, awaitWriteFinish: { stabilityThreshold: 200, pollInterval: 50 } });
      this.watcher.on('all', (_e, p) => {
        if (!/\.ya?ml$/.test(p)) return;
        clearTimeout(this.debounce);
        this.debounce = setTimeout(() => this.trigger(`file change: ${p}`), 500);
      });
    }
    this.trigger('start');
  }

  /** Asks for a reconcile now; one already running is followed by exactly one more. */
  trigger(reason: string): void {
    if (this.stopping) return;
    if (this.running) {
      this.again = true;
      return;
    }
    clearTimeout(this.timer);
    this.running = this.reconcile(reason).finally(() => {
      this.running = undefined;
      if (this.again && !this.stopping) {
        this.again = false;
        this.trigger('queued');
      }
    });
  }

  private schedule(seconds: number): void {
    if (this.stopping) return;
    clearTimeout(this.timer);
    this.status.nextReconcileAt = new Date(Date.now() + seconds * 1000).toISOString();
    this.timer = setTimeout(() => this.trigger('interval'), seconds * 1000);
  }

  private async readSource(): Promise<{ files: string[]; revision: string }> {
    if (this.opts.git) {
      const rev = await syncGit({ ...this.opts.git, dir: path.join(this.opts.stateDir, 'git') });
      return { files: [rev.path], revision: rev.revision };
    }
    // Local files: the revision is the hash of their contents.
    const { files } = await expandPaths(this.opts.files);
    const h = createHash('sha256');
    for (const f of files) h.update(f).update(await readFile(f).catch(() => Buffer.alloc(0)));
    return { files: this.opts.files, revision: `local@sha256:${h.digest('hex').slice(0, 12)}` };
  }

  private async reconcile(reason: string): Promise<void> {
    const t0 = Date.now();
    const m = this.opts.metrics;
    let revision: string | undefined;
    try {
      const src = await this.readSource();
      revision = src.revision;
      let state: DesiredState;
      try {
        state = await loadDesiredState(src.files);
        if (this.status.rejectedRevision?.revision === revision) this.status.rejectedRevision = undefined;
      } catch (e) {
        if (!(e instanceof ConfigErrors)) throw e;
        this.status.rejectedRevision = { revision, at: new Date().toISOString(), error: e.message };
        this.opts.log(`revision ${revision} is invalid and not applied${this.lastGood ? `; ${this.lastGood.revision} stays in force` : ''}:\n${e.message}`);
        if (!this.lastGood) throw new Error(`revision ${revision} is invalid and no earlier revision is known`);
        state = this.lastGood.state;
        revision = this.lastGood.revision;
        m.errors.inc();
      }
      if (this.status.suspended) {
        this.opts.log(`suspended: not reconciling ${revision} (${reason})`);
        this.schedule(this.opts.intervalSeconds);
        return;
      }
      const summary = await this.applyState(state, revision);
      this.lastGood = { state, revision };
      this.status.appliedRevision = revision;
      m.revision.reset();
      m.revision.set({ revision }, 1);
      this.startSchedules(state);
      this.status.ready = true;
      this.status.consecutiveFailures = 0;
      this.status.lastSuccessAt = new Date().toISOString();
      this.status.lastReconcile = { at: new Date(t0).toISOString(), revision, ok: true, durationSeconds: (Date.now() - t0) / 1000, summary };
      this.schedule(this.opts.intervalSeconds);
    } catch (e) {
      if (this.stopping) {
        this.opts.log(`stopped before the reconcile completed: ${(e as Error).message}`);
        return;
      }
      m.errors.inc();
      this.status.consecutiveFailures++;
      const backoff = Math.min(MAX_BACKOFF_SECONDS, this.opts.intervalSeconds, 2 ** this.status.consecutiveFailures);
      this.status.lastReconcile = { at: new Date(t0).toISOString(), revision, ok: false, durationSeconds: (Date.now() - t0) / 1000, summary: 'failed', error: (e as Error).message };
      this.opts.log(`reconcile failed (${reason}); retrying in ${backoff}s: ${(e as Error).message}`);
      this.schedule(backoff);
    } finally {
      m.reconciles.inc();
      m.duration.observe((Date.now() - t0) / 1000);
    }
  }

  /** One observe → plan → apply under the apply lock; returns a one-line summary. */
  private async applyState(state: DesiredState, revision: string): Promise<string> {
    const o = this.opts;
    const lock = await acquireLock(o.stateDir, { timeoutSeconds: o.intervalSeconds, command: `watch ${revision}`, log: o.log });
    try {
      const cache = await FileObservationCache.open(o.stateDir);
      const virsh = () => o.virsh(state.connection);
      const planOpts = { stateDir: o.stateDir, allowReplace: o.allowReplace, prune: o.prune, cache, virsh };
      let p = await planWithObservations(state, planOpts);
      if (p.plan.refusals.length) throw new Error(`${renderPlan(p.plan)}\n(refused changes: nothing applied)`);
      const changes = p.plan.actions.filter((a) => a.kind !== 'no-op');
      let summary = 'no changes';
      if (changes.length) {
        o.log(`applying ${revision}: ${changes.length} change(s)`);
        const result = await applyPlan(p.plan, { stateDir: o.stateDir, parallelism: o.parallelism, cache, virsh, log: o.log, signal: this.abort.signal });
        const c = result.counts;
        summary = `${c.created} created, ${c.updated} updated, ${c.replaced} replaced, ${c.deleted} deleted${c.failed ? `, ${c.failed} failed` : ''}`;
        // Drift: the host moved away from a revision already applied (not a new revision).
        if (this.firstSuccess && this.lastGood?.revision === revision) {
          for (const a of changes) o.metrics.drift.inc({ kind: a.resource });
          this.status.driftCorrections += changes.length;
        }
        if (c.failed) throw new Error(`apply of ${revision}: ${summary}`);
        p = await planWithObservations(state, planOpts);
      } else await cache.save();
      this.firstSuccess = true;
      this.refreshStatus(state, p);
      return summary;
    } finally {
      await lock.release();
    }
  }

  private refreshStatus(state: DesiredState, p: Awaited<ReturnType<typeof planWithObservations>>): void {
    const m = this.opts.metrics;
    this.status.images = imageStatuses(state, p);
    this.status.pools = poolStatuses(state, p);
    this.status.vms = vmStatuses(state, p);
    this.status.notes = p.plan.notes;
    m.resources.reset();
    for (const [kind, list] of [['image', this.status.images], ['pool', this.status.pools], ['vm', this.status.vms]] as const) {
      for (const x of list) m.resources.inc({ kind, state: x.status });
    }
    for (const pool of this.status.pools) {
      if (pool.capacity !== undefined) m.poolCapacity.set({ pool: pool.name }, pool.capacity);
      if (pool.allocation !== undefined) m.poolAllocation.set({ pool: pool.name }, pool.allocation);
    }
  }

  /** (Re)creates the croner jobs of the backup schedules in force; reports missed runs once. */
  private startSchedules(state: DesiredState): void {
    const key = JSON.stringify(Object.values(state.backups).map((b) => [b.name, b.schedule, b.timezone]));
    if (this.scheduleKey === key) return void this.refreshBackups(state);
    const firstTime = this.scheduleKey === undefined;
    this.scheduleKey = key;
    for (const c of this.crons) c.stop();
    this.crons = Object.values(state.backups).map((spec) => new Cron(spec.schedule, { timezone: spec.timezone, protect: true }, () => void this.backup(spec.name)));
    void this.refreshBackups(state).then(async () => {
      if (!firstTime) return;
      const lastSuccess = Object.fromEntries(this.status.backups.filter((b) => b.lastSuccess).map((b) => [b.name, b.lastSuccess!]));
      for (const note of overdue(Object.values(state.backups).filter((b) => lastSuccess[b.name]), lastSuccess)) {
        this.opts.log(`${note} (missed while the service was down): one catch-up run now`);
        await this.backup(note.split(' ')[0]!.replace(/^backups\./, ''));
      }
    });
  }

  private async refreshBackups(state: DesiredState): Promise<void> {
    const records = await readBackupRecords(this.opts.stateDir);
    this.status.backups = Object.values(state.backups).map((b, i) => ({
      name: b.name, vm: b.vm, schedule: b.schedule, lastSuccess: records.lastSuccess[b.name], lastFailure: records.lastFailure[b.name],
      nextRun: this.crons[i]?.nextRun()?.toISOString(),
    }));
    for (const b of this.status.backups) if (b.lastSuccess) this.opts.metrics.backupLastSuccess.set({ backup: b.name }, Date.parse(b.lastSuccess) / 1000);
  }

  /** Runs one backup of the schedule in force, under the apply lock. */
  async backup(name: string): Promise<void> {
    const good = this.lastGood;
    const spec = good?.state.backups[name];
    if (!spec || this.stopping || this.status.suspended) return;
    const lock = await acquireLock(this.opts.stateDir, { timeoutSeconds: 3600, command: `watch backup ${name}`, log: this.opts.log });
    try {
      await runBackup(spec, { virsh: this.opts.virsh(good.state.connection), stateDir: this.opts.stateDir, log: this.opts.log });
    } catch (e) {
      this.opts.metrics.backupFailures.inc({ backup: name });
      this.opts.log(`backups.${name} failed: ${(e as Error).message}`);
    } finally {
      await lock.release();
      await this.refreshBackups(good.state);
    }
  }

  setSuspended(on: boolean): void {
    this.status.suspended = on;
    if (!on) this.trigger('resumed');
  }

  /** Stops taking work; the action in flight finishes, no further action starts. */
  async stop(): Promise<void> {
    this.stopping = true;
    this.abort.abort();
    clearTimeout(this.timer);
    clearTimeout(this.debounce);
    for (const c of this.crons) c.stop();
    await this.watcher?.close();
    await this.running;
  }
}
