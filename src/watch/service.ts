// `reconcile watch`: the long-lived, level-triggered loop. Every interval (and on a file
// change, a git webhook, or a schedule) it reads the desired state, observes, plans and
// applies — one reconcile at a time, under the same lock as `apply`. A revision that fails
// validation is not applied: the last good one stays in force and keeps being enforced.
import { hasChanges, isChange, type Waiting } from '../reconcile/plan.js';
import { createHash } from 'node:crypto';
import { readFile, writeFile } from 'node:fs/promises';
import path from 'node:path';
import { watch as chokidar, type FSWatcher } from 'chokidar';
import { Cron } from 'croner';
import type { Virsh } from '../tools/virsh.js';
import { applyPlan, tidyInterrupted } from '../reconcile/apply.js';
import { describeProgress, periodicProgress, ProgressBoard, teeProgress } from '../progress/progress.js';
import { passphraseFiles, runBackup } from '../backups/backup.js';
import { overdue } from '../providers/backup/diff.js';
import { readBackupRecords } from '../backups/records.js';
import { consecutiveFailures, suspendedSchedules } from '../backups/suspension.js';
import { loadDesiredState } from '../reconcile/config.js';
import type { HostTarget } from '../reconcile/hosts.js';
import type { NotifyEvent } from './notify.js';
import { declaredOf, DriftEvents } from './drift-events.js';
import { bindStateHost, checkStateHost } from '../reconcile/state-host.js';
import { diskStats, type DiskStats } from '../tools/domstats.js';
import { planWithObservations } from '../reconcile/engine.js';
import { withoutRefused } from '../reconcile/partial.js';
import { ConfigErrors } from '../reconcile/errors.js';
import { expandPaths } from '../reconcile/load.js';
import { FileObservationCache } from '../reconcile/inventory.js';
import { acquireLock } from '../reconcile/lock.js';
import type { DesiredState } from '../reconcile/model.js';
import { imageStatuses, poolStatuses, vmStatuses, type ImageStatus, type PoolStatus, type VmStatus } from '../show.js';
import { checkout, displayGitUrl, fetchRef, UnverifiedRevision, verifyCommit, type GitSource } from '../tools/git.js';
import type { Logger } from './log.js';
import type { Metrics } from './metrics.js';

export interface WatchOptions {
  files: string[];
  /** the host this agent is (files for other hosts are left out) */
  target: HostTarget;
  git?: Omit<GitSource, 'dir'>;
  stateDir: string;
  intervalSeconds: number;
  allowReplace: boolean;
  prune: boolean;
  parallelism: number;
  suspended: boolean;
  virsh: (yamlUri?: string) => Virsh;
  metrics: Metrics;
  logger: Logger;
  /** tells webhooks what happened (--notify); never blocks */
  notify?: (e: WatchEvent) => void;
}

/** What the service tells notification webhooks of (notify.ts; the host is added there). */
export type WatchEvent = Omit<NotifyEvent, 'host'>;

export interface WatchStatus {
  /** who this agent is (--host, --label) */
  host: string;
  labels: Record<string, string>;
  /** the last reconcile applied everything, with nothing refused or failed (Flux's Ready) */
  ready: boolean;
  /** why not ready, when it is not */
  notReadyReason?: string;
  suspended: boolean;
  source: string;
  /** the revision in force (last one that validated and applied) */
  appliedRevision?: string;
  /** the newest revision seen, when it differs (rejected): invalid YAML, or a commit not signed by a trusted key */
  rejectedRevision?: { revision: string; at: string; error: string; reason: 'invalid' | 'signature' };
  /** why the repository could not be read at the last try (the revision in force stays) */
  sourceError?: string;
  /** the newest revision of the source (a branch's head), and since when the one in force is behind it */
  sourceRevision?: string;
  behindSince?: string;
  lastReconcile?: { at: string; revision?: string; ok: boolean; durationSeconds: number; summary: string; error?: string };
  lastSuccessAt?: string;
  /** the last time the host was observed; object statuses are 'unknown' when this is stale */
  lastObservedAt?: string;
  consecutiveFailures: number;
  nextReconcileAt?: string;
  driftCorrections: number;
  images: ImageStatus[];
  pools: PoolStatus[];
  vms: VmStatus[];
  backups: {
    name: string;
    vm: string;
    schedule: string;
    lastSuccess?: string;
    lastFailure?: { at: string; error: string };
    /** failed runs since the last success */
    consecutiveFailures: number;
    /** suspended after maxFailures failed runs in a row: since when */
    suspended?: { at: string; failures: number };
    nextRun?: string;
  }[];
  notes: string[];
  /** disruptive changes held back until a maintenance window opens */
  waiting?: Waiting[];
  /** long work under way (downloads, conversions, mkfs), as far as it has got */
  operations?: { id: string; what: string; progress: string; elapsedSeconds: number }[];
}

const MAX_BACKOFF_SECONDS = 600;

/** The git repository could not be read (fetched, cloned): the revision in force stays. */
class SourceUnavailable extends Error {
  constructor(why: string) {
    const said = why
      .trim()
      .split('\n')
      .filter((l) => !/^Cloning into /.test(l))
      .join(' ')
      .slice(0, 500);
    const hint = /Host key verification failed|host key is known|HOST IDENTIFICATION HAS CHANGED/.test(said)
      ? " (the server's host key is not in --known-hosts: add it, checked, with ssh-keyscan -p PORT HOST >> KNOWN_HOSTS)"
      : '';
    super(`cannot read the repository: ${said}${hint}`);
  }
}

/** A reconcile that observed and applied what it could, with objects refused or failed. */
class Incomplete extends Error {
  /** the problems alone (not the counts of what went well): what "the same failure" means */
  constructor(
    message: string,
    readonly problems: string,
  ) {
    super(message);
  }
}

type Statused = { name: string; status: string; detail: string };

export class WatchService {
  readonly status: WatchStatus;
  /** long work of the apply under way, for /status and the page */
  private readonly board = new ProgressBoard();
  private readonly periodic = periodicProgress((l) => this.actionLog(l));

  /** The status with the long work under way now. */
  statusNow(): WatchStatus {
    const now = Date.now();
    const operations = this.board.snapshot().map((t) => ({ id: t.id, what: t.verb, progress: describeProgress(t, now), elapsedSeconds: Math.round((now - t.startedAt) / 1000) }));
    return { ...this.status, operations };
  }
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
  /** the failure being reported: logged when it starts, changes and clears, not at every retry */
  private failing?: string;
  /** action log lines of the last failed attempt, not repeated by the retries that fail the same way */
  private lastAttemptLines = new Set<string>();
  private attemptLines = new Set<string>();
  private readonly log: (line: string) => void;
  private readonly drift: DriftEvents;
  private windowTimer?: NodeJS.Timeout;
  private lastSummary?: string;

  constructor(private readonly opts: WatchOptions) {
    this.status = {
      host: opts.target.host,
      labels: opts.target.labels,
      ready: false,
      suspended: opts.suspended,
      consecutiveFailures: 0,
      driftCorrections: 0,
      source: opts.git ? `${displayGitUrl(opts.git.url)} (${opts.git.ref}${opts.git.subdir ? `, ${opts.git.subdir}` : ''})` : opts.files.join(', '),
      images: [],
      pools: [],
      vms: [],
      backups: [],
      notes: [],
    };
    this.log = (line) => opts.logger.info(line);
    this.drift = new DriftEvents((reason) => this.trigger(reason), this.log, this.abort.signal);
  }

  /** Action lines of a retry that repeats the failed attempt before it word for word are dropped. */
  private actionLog = (line: string): void => {
    this.attemptLines.add(line);
    if (this.failing && this.lastAttemptLines.has(line)) return;
    this.opts.logger.info(line);
  };

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

  private gitSource(): GitSource {
    return { ...this.opts.git!, dir: path.join(this.opts.stateDir, 'git') };
  }

  private async readSource(): Promise<{ files: string[]; revision: string }> {
    if (this.opts.git) {
      const src = this.gitSource();
      const head = await fetchRef(src, this.abort.signal).catch((e: Error) => {
        throw new SourceUnavailable(e.message);
      });
      this.sawSource(head.revision);
      if (src.trust) await verifyCommit(src, head);
      const rev = await checkout(src, head.sha);
      return { files: [rev.path], revision: rev.revision };
    }
    // Local files: the revision is the hash of their contents.
    const { files } = await expandPaths(this.opts.files);
    const h = createHash('sha256');
    for (const f of files) h.update(f).update(await readFile(f).catch(() => Buffer.alloc(0)));
    return { files: this.opts.files, revision: `local@sha256:${h.digest('hex').slice(0, 12)}` };
  }

  /** The newest revision of the source, as just fetched: how long the one in force is behind it. */
  private sawSource(revision: string): void {
    if (this.status.sourceRevision !== revision) {
      this.status.sourceRevision = revision;
      this.opts.metrics.head.reset();
      this.opts.metrics.head.set({ revision }, 1);
      if (!this.status.behindSince) this.status.behindSince = new Date().toISOString();
    }
    this.updateBehind();
  }

  private updateBehind(): void {
    const s = this.status;
    if (!s.sourceRevision || s.sourceRevision === s.appliedRevision) s.behindSince = undefined;
    else s.behindSince ??= new Date().toISOString();
    this.opts.metrics.behind.set(s.behindSince ? (Date.now() - Date.parse(s.behindSince)) / 1000 : 0);
  }

  private lastGoodFile = () => path.join(this.opts.stateDir, 'watch-last-good.json');

  /** The revision in force, kept for a restart that finds the newest one rejected. */
  private async rememberLastGood(revision: string): Promise<void> {
    if (!this.opts.git) return;
    const sha = /@sha1:([0-9a-f]+)$/.exec(revision)?.[1];
    if (sha) await writeFile(this.lastGoodFile(), `${JSON.stringify({ revision, sha, url: displayGitUrl(this.opts.git.url) })}\n`, { mode: 0o600 });
  }

  /**
   * After a restart: the revision the service last applied, checked out again (and verified
   * again, with trusted keys) and loaded, or undefined.
   */
  private async restoreLastGood(): Promise<{ state: DesiredState; revision: string } | undefined> {
    if (!this.opts.git) return undefined;
    try {
      const saved = JSON.parse(await readFile(this.lastGoodFile(), 'utf8')) as { revision: string; sha: string };
      const src = this.gitSource();
      if (src.trust) await verifyCommit(src, saved);
      const rev = await checkout(src, saved.sha);
      return { state: await loadDesiredState([rev.path], this.opts.target), revision: saved.revision };
    } catch {
      return undefined;
    }
  }

  private async reconcile(reason: string): Promise<void> {
    const t0 = Date.now();
    const m = this.opts.metrics;
    let revision: string | undefined;
    this.attemptLines = new Set();
    try {
      let state: DesiredState;
      let sourceError: string | undefined;
      try {
        const src = await this.readSource();
        revision = src.revision;
        state = await loadDesiredState(src.files, this.opts.target);
        // A revision that loads supersedes any rejected one (fixed, reverted or replaced).
        this.status.rejectedRevision = undefined;
        m.rejected.reset();
      } catch (e) {
        // The repository out of reach (the network, the server, a key): the revision in force is
        // still enforced (drift healed, backups run), and the agent is not ready until it is back.
        if (e instanceof SourceUnavailable && !this.stopping) {
          this.lastGood ??= await this.restoreLastGood();
          if (!this.lastGood) throw e;
          if (this.status.sourceError !== e.message) this.opts.logger.error(`${e.message}; ${this.lastGood.revision} stays in force`);
          sourceError = e.message;
          state = this.lastGood.state;
          revision = this.lastGood.revision;
        } else {
          const reason = e instanceof ConfigErrors ? 'invalid' : e instanceof UnverifiedRevision ? 'signature' : undefined;
          if (!reason) throw e;
          if (e instanceof UnverifiedRevision) revision = e.revision;
          const known = this.status.rejectedRevision?.revision === revision;
          // Files named as the repository has them, not by the clone's place in the state directory.
          if (this.opts.git) (e as Error).message = (e as Error).message.split(`${this.gitSource().dir}/`).join('');
          this.status.rejectedRevision = { revision: revision!, at: known ? this.status.rejectedRevision!.at : new Date().toISOString(), error: (e as Error).message, reason };
          m.rejected.reset();
          m.rejected.set({ reason }, 1);
          // The last good revision: this run's, or the one a previous run of the service applied.
          this.lastGood ??= await this.restoreLastGood();
          // Once per rejected revision, not at every interval.
          if (!known) {
            if (reason === 'signature') m.signatureRejections.inc();
            const what = reason === 'invalid' ? 'is invalid and not applied' : 'is not applied';
            this.opts.logger.error(
              reason === 'invalid'
                ? `revision ${revision} ${what}${this.lastGood ? `; ${this.lastGood.revision} stays in force` : ''}:\n${(e as Error).message}`
                : `${(e as Error).message}; it ${what}${this.lastGood ? `, ${this.lastGood.revision} stays in force` : ''}`,
              { revision, reason, ...(e instanceof ConfigErrors ? { errors: e.errors.length } : {}) },
            );
            this.opts.notify?.({ kind: 'revision-rejected', revision, message: (e as Error).message.split('\n')[0]!, details: { reason } });
          }
          if (!this.lastGood) throw new Error(`revision ${revision} ${reason === 'invalid' ? 'is invalid' : 'is not signed by a trusted key'} and no earlier revision is known`);
          state = this.lastGood.state;
          revision = this.lastGood.revision;
          m.errors.inc();
        }
      }
      this.status.sourceError = sourceError;
      // Said at once, not only once this run's apply is done.
      if (sourceError) {
        this.status.ready = false;
        this.opts.metrics.ready.set(0);
        this.status.notReadyReason = `${sourceError.split('\n')[0]}; ${revision} stays in force`;
      }
      if (this.status.suspended) {
        this.log(`suspended: not reconciling ${revision} (${reason})`);
        this.schedule(this.opts.intervalSeconds);
        return;
      }
      this.lastGood = { state, revision };
      const summary = await this.applyState(state, revision);
      if (this.status.appliedRevision !== revision) {
        await this.rememberLastGood(revision);
        if (this.status.appliedRevision) this.opts.notify?.({ kind: 'revision-applied', revision, message: `${revision} applied: ${summary}` });
      }
      this.status.appliedRevision = revision;
      m.revision.reset();
      m.revision.set({ revision }, 1);
      this.updateBehind();
      // From now on a change to what this revision declares is noticed as it happens.
      this.drift.follow(this.opts.virsh(state.connection).uri, declaredOf(state));
      this.startSchedules(state);
      this.status.ready = !this.status.rejectedRevision && !sourceError;
      this.opts.metrics.ready.set(this.status.ready ? 1 : 0);
      const rejected = this.status.rejectedRevision;
      this.status.notReadyReason = rejected
        ? `revision ${rejected.revision} ${rejected.reason === 'invalid' ? 'is invalid' : 'is not signed by a trusted key'}; ${revision} stays in force`
        : sourceError
          ? `${sourceError.split('\n')[0]}; ${revision} stays in force`
          : undefined;
      this.status.consecutiveFailures = 0;
      this.status.lastSuccessAt = new Date().toISOString();
      this.status.lastReconcile = { at: new Date(t0).toISOString(), revision, ok: true, durationSeconds: (Date.now() - t0) / 1000, summary };
      if (this.failing) {
        this.opts.logger.info(`reconcile recovered: ${summary}`, { revision });
        this.opts.notify?.({ kind: 'reconcile-recovered', revision, message: `reconcile recovered: ${summary}` });
      }
      // Said when something asked for this run (start, a file change, a push, SIGHUP) or it
      // changed something; a quiet interval that found the host in sync stays quiet.
      // (Something waiting for a maintenance window is said once, not at every interval.)
      else if (reason !== 'interval' || (summary !== 'no changes' && !(summary.startsWith('no changes;') && summary === this.lastSummary)))
        this.log(`reconciled ${revision} in ${((Date.now() - t0) / 1000).toFixed(1)}s (${reason}): ${summary}`);
      this.failing = undefined;
      this.lastSummary = summary;
      this.schedule(this.opts.intervalSeconds);
    } catch (e) {
      if (this.stopping) {
        this.log(`stopped before the reconcile completed: ${(e as Error).message}`);
        return;
      }
      const msg = (e as Error).message;
      m.errors.inc();
      this.status.consecutiveFailures++;
      const backoff = Math.min(MAX_BACKOFF_SECONDS, this.opts.intervalSeconds, 2 ** this.status.consecutiveFailures);
      this.status.ready = false;
      this.opts.metrics.ready.set(this.status.ready ? 1 : 0);
      this.status.notReadyReason = msg.split('\n')[0];
      this.status.lastReconcile = {
        at: new Date(t0).toISOString(),
        revision,
        ok: false,
        durationSeconds: (Date.now() - t0) / 1000,
        summary: e instanceof Incomplete ? msg.split('\n')[0]! : 'failed',
        error: msg,
      };
      // Nothing was observed: what the status said before is no longer known to be true.
      if (!(e instanceof Incomplete)) this.markUnknown(msg);
      const key = e instanceof Incomplete ? e.problems : msg;
      if (key !== this.failing) {
        this.opts.logger.error(
          `reconcile ${this.failing ? 'now failing differently' : 'failing'} (${reason}); retrying with backoff, logged again when it changes or clears: ${msg}`,
          { revision, retryInSeconds: backoff },
        );
        this.opts.notify?.({ kind: 'reconcile-failed', revision, message: msg.split('\n')[0]!, details: { retryInSeconds: backoff } });
        this.failing = key;
      }
      this.lastAttemptLines = this.attemptLines;
      this.schedule(backoff);
    } finally {
      m.reconciles.inc();
      m.duration.observe((Date.now() - t0) / 1000);
    }
  }

  /**
   * One observe → plan → apply under the apply lock; returns a one-line summary. Refused
   * objects, and those that depend on them, are held back; everything else is applied.
   * Throws Incomplete (after refreshing every object's status) when anything was refused,
   * held back or failed.
   */
  private async applyState(state: DesiredState, revision: string): Promise<string> {
    const o = this.opts;
    // Checked every time: the state directory may have been bound by an apply since.
    await checkStateHost(o.stateDir, state, true);
    const lock = await acquireLock(o.stateDir, { timeoutSeconds: o.intervalSeconds, command: `watch ${revision}`, log: this.log });
    try {
      await bindStateHost(o.stateDir, state);
      const cache = await FileObservationCache.open(o.stateDir);
      const virsh = () => o.virsh(state.connection);
      const planOpts = { stateDir: o.stateDir, allowReplace: o.allowReplace, prune: o.prune, cache, virsh };
      let p = await planWithObservations(state, planOpts);
      this.status.lastObservedAt = new Date().toISOString();
      const { plan, blocked } = withoutRefused(p.plan, state);
      const refusals = p.plan.refusals;
      const changes = plan.actions.filter(isChange);
      const failed = new Map<string, string>();
      let summary = 'no changes';
      if (hasChanges(plan)) {
        this.actionLog(`applying ${revision}: ${changes.length} change(s)${refusals.length ? ` (${refusals.length} refused, ${blocked.length} held back)` : ''}`);
        const result = await applyPlan(plan, {
          stateDir: o.stateDir,
          parallelism: o.parallelism,
          cache,
          virsh,
          log: this.actionLog,
          progress: teeProgress(this.board, this.periodic),
          signal: this.abort.signal,
        });
        const c = result.counts;
        summary = `${c.created} created, ${c.updated} updated, ${c.replaced} replaced, ${c.deleted} deleted${c.failed ? `, ${c.failed} failed` : ''}`;
        for (const r of result.results) if (r.status === 'failed' || r.status === 'skipped') failed.set(r.id, r.error ?? 'failed');
        // Drift: the host moved away from a revision already applied (not a new revision).
        if (this.firstSuccess && this.status.appliedRevision === revision) {
          // What waited for a maintenance window is the revision being applied, not drift.
          const waited = new Set((this.status.waiting ?? []).map((w) => w.id));
          const healed = result.results.filter((r) => r.status === 'done' && !waited.has(r.id));
          for (const r of healed) o.metrics.drift.inc({ kind: changes.find((a) => a.id === r.id)?.resource ?? 'unknown' });
          this.status.driftCorrections += healed.length;
          if (healed.length)
            this.opts.notify?.({
              kind: 'drift-corrected',
              revision,
              subject: healed.map((r) => r.id).join(','),
              message: `drift corrected: ${healed.map((r) => r.id).join(', ')}`,
            });
        }
        p = await planWithObservations(state, planOpts);
        this.status.lastObservedAt = new Date().toISOString();
      } else {
        await tidyInterrupted(o.stateDir, this.actionLog, p.inventory);
        await cache.save();
      }
      this.refreshStatus(state, p, failed, blocked);
      this.holdForWindow(p.plan.waiting ?? []);
      if (p.plan.waiting?.length) summary += `; ${p.plan.waiting.length} waiting for a maintenance window`;
      const problems = [
        ...refusals.map((r) => `refused: ${r.message}`),
        ...blocked.map((b) => `held back: ${b.id} depends on ${b.because}, which is refused`),
        ...[...failed].map(([id, err]) => `failed: ${id}: ${err}`),
      ];
      if (problems.length)
        throw new Incomplete(
          `${problems.length} object(s) not reconciled (${problems[0]}${problems.length > 1 ? `; and ${problems.length - 1} more` : ''}); ${revision}: ${summary}\n${problems.join('\n')}`,
          problems.join('\n'),
        );
      this.firstSuccess = true;
      return summary;
    } finally {
      await lock.release();
    }
  }

  private refreshStatus(state: DesiredState, p: Awaited<ReturnType<typeof planWithObservations>>, failed: Map<string, string>, blocked: { id: string; because: string }[]): void {
    const mark = <T extends Statused>(list: T[], prefix: string): T[] =>
      list.map((x) => {
        const id = `${prefix}.${x.name}`;
        if (failed.has(id)) return { ...x, status: 'failed', detail: failed.get(id)! };
        const b = blocked.find((y) => y.id === id);
        if (b) return { ...x, status: 'blocked', detail: `depends on ${b.because}, which is refused${x.detail ? `; ${x.detail}` : ''}` };
        return x;
      });
    this.status.images = mark(imageStatuses(state, p), 'images');
    this.status.pools = mark(poolStatuses(state, p), 'pools');
    this.status.vms = mark(vmStatuses(state, p), 'vms');
    this.status.notes = p.plan.notes;
    const m = this.opts.metrics;
    m.imageAllocation.reset();
    m.imageCapacity.reset();
    for (const img of this.status.images) {
      if (img.allocated !== undefined) m.imageAllocation.set({ image: img.name }, img.allocated);
      if (img.virtualSize !== undefined) m.imageCapacity.set({ image: img.name }, img.virtualSize);
    }
    for (const pool of this.status.pools) {
      if (pool.capacity !== undefined) this.opts.metrics.poolCapacity.set({ pool: pool.name }, pool.capacity);
      if (pool.capacityAlert !== undefined) m.poolAlert.set({ pool: pool.name }, pool.capacityAlert / 100);
      if (pool.allocation !== undefined) this.opts.metrics.poolAllocation.set({ pool: pool.name }, pool.allocation);
    }
    this.countResources();
  }

  /** Observation failed: every object's state is unknown, not what was last seen. */
  private markUnknown(error: string): void {
    const since = this.status.lastObservedAt ? `; last observed ${this.status.lastObservedAt}` : '';
    const unknown = <T extends Statused>(list: T[]): T[] => list.map((x) => ({ ...x, status: 'unknown', detail: `not observed: ${error.split('\n')[0]}${since}` }));
    this.status.images = unknown(this.status.images);
    this.status.pools = unknown(this.status.pools);
    this.status.vms = unknown(this.status.vms);
    this.countResources();
  }

  private countResources(): void {
    const m = this.opts.metrics;
    m.resources.reset();
    for (const [kind, list] of [
      ['image', this.status.images],
      ['pool', this.status.pools],
      ['vm', this.status.vms],
    ] as const) {
      for (const x of list) m.resources.inc({ kind, state: x.status });
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
      for (const note of overdue(
        Object.values(state.backups).filter((b) => lastSuccess[b.name]),
        lastSuccess,
      )) {
        this.log(`${note} (missed while the service was down): one catch-up run now`);
        await this.backup(note.split(' ')[0]!.replace(/^backups\./, ''));
      }
    });
  }

  private async refreshBackups(state: DesiredState): Promise<void> {
    const records = await readBackupRecords(this.opts.stateDir);
    const suspended = suspendedSchedules(Object.values(state.backups), records.suspended);
    this.status.backups = Object.values(state.backups).map((b, i) => ({
      name: b.name,
      vm: b.vm,
      schedule: b.schedule,
      lastSuccess: records.lastSuccess[b.name],
      lastFailure: records.lastFailure[b.name],
      consecutiveFailures: consecutiveFailures(records.runs, b.name),
      suspended: suspended.get(b.name),
      nextRun: suspended.has(b.name) ? undefined : this.crons[i]?.nextRun()?.toISOString(),
    }));
    const m = this.opts.metrics;
    for (const g of [m.backupLastSuccess, m.backupLastFailure, m.backupConsecutiveFailures, m.backupNextRun, m.backupSuspended]) g.reset();
    for (const b of this.status.backups) {
      const at = (t: string | undefined, g: typeof m.backupLastSuccess) => t && g.set({ backup: b.name }, Date.parse(t) / 1000);
      at(b.lastSuccess, m.backupLastSuccess);
      at(b.lastFailure?.at, m.backupLastFailure);
      at(b.nextRun, m.backupNextRun);
      m.backupConsecutiveFailures.set({ backup: b.name }, b.consecutiveFailures);
      m.backupSuspended.set({ backup: b.name }, b.suspended ? 1 : 0);
    }
  }

  /** Runs one backup of the schedule in force, under the apply lock. */
  async backup(name: string): Promise<void> {
    const good = this.lastGood;
    const spec = good?.state.backups[name];
    if (!spec || this.stopping || this.status.suspended) return;
    if (suspendedSchedules([spec], (await readBackupRecords(this.opts.stateDir)).suspended).has(name)) {
      this.log(`backups.${name} is suspended after failed runs in a row: not run (\`reconcile backup resume ${name}\` or a change to it resumes it)`);
      return;
    }
    const lock = await acquireLock(this.opts.stateDir, { timeoutSeconds: 3600, command: `watch backup ${name}`, log: this.log });
    try {
      await runBackup(spec, { virsh: this.opts.virsh(good.state.connection), stateDir: this.opts.stateDir, log: this.log, passphrases: passphraseFiles(good.state) });
    } catch (e) {
      this.opts.metrics.backupFailures.inc({ backup: name });
      this.log(`backups.${name} failed: ${(e as Error).message}`);
      this.opts.notify?.({ kind: 'backup-failed', subject: name, message: `backups.${name} failed: ${(e as Error).message.split('\n')[0]}` });
    } finally {
      await lock.release();
      await this.refreshBackups(good.state);
    }
    const now = this.status.backups.find((b) => b.name === name);
    if (now?.suspended)
      this.opts.notify?.({ kind: 'backup-suspended', subject: name, message: `backups.${name} is suspended after ${now.suspended.failures} failed runs in a row` });
  }

  setSuspended(on: boolean): void {
    this.status.suspended = on;
    if (!on) this.trigger('resumed');
  }

  /** What waits for a maintenance window: shown, counted, and reconciled the moment the next one opens. */
  private holdForWindow(waiting: Waiting[]): void {
    this.status.waiting = waiting;
    this.opts.metrics.waiting.set(waiting.length);
    clearTimeout(this.windowTimer);
    const opensAt = waiting[0]?.opensAt;
    if (!opensAt) return;
    // A timer fires at most ~24.8 days ahead; the interval catches a window further off.
    const ms = Date.parse(opensAt) - Date.now() + 200;
    if (ms > 0 && ms < 2 ** 31 - 1) this.windowTimer = setTimeout(() => this.trigger(`maintenance window opened (${opensAt})`), ms);
  }

  /** Disk I/O of the declared VMs (for /metrics): one domstats call, nothing when none is declared. */
  async diskStats(): Promise<DiskStats[]> {
    const state = this.lastGood?.state;
    const names = new Set(Object.values(state?.vms ?? {}).map((v) => v.name));
    if (!state || !names.size) return [];
    return (await diskStats(this.opts.virsh(state.connection))).filter((d) => names.has(d.vm));
  }

  /** Stops taking work; the action in flight finishes, no further action starts. */
  async stop(): Promise<void> {
    this.stopping = true;
    this.abort.abort();
    clearTimeout(this.timer);
    clearTimeout(this.debounce);
    clearTimeout(this.windowTimer);
    for (const c of this.crons) c.stop();
    await this.watcher?.close();
    await this.drift.stop();
    await this.running;
  }
}
