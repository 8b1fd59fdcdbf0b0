// Executes exactly the actions of a plan: a dependency scheduler. Dependencies first,
// independent actions in parallel (bounded); each action is carried out by its kind, and its
// inventory effect saved before the next decision, so a crash loses nothing. No kind is
// known here.
import path from 'node:path';
import pLimit from 'p-limit';
import type { StatCache } from '../providers/common/stat-cache.js';
import { quietProgress, type ProgressSink } from '../progress/progress.js';
import { removeAbandonedScratch, useScratchRoot } from '../tools/scratch.js';
import { KINDS, kindOf } from '../providers/registry.js';
import { CommandError } from '../tools/exec.js';
import type { Virsh } from '../tools/virsh.js';
import { UserError } from './errors.js';
import { InventoryJournal, readInventory, type Inventory } from './inventory.js';
import type { Effect, ExecContext } from './kind.js';
import { isChange, type Action, type ActionKind, type Plan } from './plan.js';

export interface ApplyOptions {
  stateDir: string;
  parallelism: number;
  cache?: StatCache;
  /** the libvirt connection, opened on the first action that needs it */
  virsh?: () => Virsh;
  log: (line: string) => void;
  /** long work's progress (default: none shown) */
  progress?: ProgressSink;
  /**
   * Once aborted, no further action starts. Actions in flight: a build in private scratch
   * space (image create/replace, a volume import's conversion and upload) is cancelled — its
   * qemu-img is terminated and its files removed, and the next apply builds it again; every
   * other action (libvirt calls, in-place resizes, permission changes, deletes) is short and
   * would leave its object half-changed if stopped, so it finishes.
   */
  signal?: AbortSignal;
}

/** skipped: a dependency did not complete; not-started: shutting down; cancelled: stopped in flight */
export type ActionStatus = 'done' | 'failed' | 'skipped' | 'not-started' | 'cancelled';

export interface ActionResult {
  id: string;
  kind: ActionKind;
  status: ActionStatus;
  seconds: number;
  error?: string;
}

export interface ApplyResult {
  results: ActionResult[];
  /** forgotten: deletes that only dropped a record (the object was gone, or no longer reconcile's) */
  counts: Record<'created' | 'updated' | 'replaced' | 'deleted' | 'forgotten' | 'failed' | 'cancelled' | 'notStarted', number>;
}

const VERB: Record<ActionKind, [string, string]> = {
  create: ['creating', 'created'],
  update: ['updating', 'updated'],
  replace: ['replacing', 'replaced'],
  delete: ['deleting', 'deleted'],
  'no-op': ['', ''],
};

export async function applyPlan(plan: Plan, opts: ApplyOptions): Promise<ApplyResult> {
  if (plan.refusals.length) throw new UserError(`the plan has ${plan.refusals.length} refused change(s); nothing was applied`);
  const todo = plan.actions.filter(isChange);
  let client: Virsh | undefined;
  const virsh = () => {
    if (!opts.virsh) throw new Error('this plan needs a libvirt connection');
    client ??= opts.virsh();
    return client;
  };
  const inventory = await readInventory(opts.stateDir);
  // Scratch space of this apply lives in the state directory, where the next apply (holding
  // the same lock) finds and removes what a killed one left.
  const scratch = path.join(opts.stateDir, 'scratch');
  useScratchRoot(scratch);
  await tidyInterrupted(opts.stateDir, opts.log, inventory);
  // Each change durable before its caller goes on, as a journal line (concurrent changes share
  // one append); the whole file is rewritten once, at the end.
  const journal = new InventoryJournal(opts.stateDir, inventory);
  await journal.begin();
  const limit = pLimit(Math.max(1, opts.parallelism));
  const results = new Map<string, ActionResult>();
  const running = new Map<string, Promise<ActionResult>>();
  const byId = new Map(todo.map((a) => [a.id, a]));

  // What kinds see of the inventory: every change saved before the call returns.
  const atEnd: (() => Promise<void>)[] = [];
  const ctx: ExecContext = {
    atEnd: (task) => void atEnd.push(task),
    virsh,
    cache: opts.cache,
    log: opts.log,
    stateDir: opts.stateDir,
    progress: opts.progress ?? quietProgress,
    signal: opts.signal,
    inventory: {
      get: (k) => inventory.objects[k],
      set: (k, rec) => journal.record(k, rec),
      forget: (k) => journal.record(k, null),
    },
  };
  const persist = async (effect: Effect): Promise<void> => {
    if (!effect) return;
    if ('forget' in effect) await ctx.inventory.forget(effect.forget);
    else await ctx.inventory.set(...effect.record);
  };
  const execute = async (a: Action): Promise<void> => persist(await kindOf(a.resource).execute(a, ctx));

  const shuttingDown = (a: Action): ActionResult => {
    opts.log(`${a.id}: not started (shutting down)`);
    return { id: a.id, kind: a.kind, status: 'not-started', seconds: 0, error: 'shutting down' };
  };
  const outcome = (a: Action, t0: number, e?: unknown): ActionResult => {
    const seconds = (Date.now() - t0) / 1000;
    if (e === undefined) {
      // A delete that is not destructive only drops reconcile's record (counted as forgotten).
      opts.log(`${a.id}: ${a.kind === 'delete' && !a.destructive ? 'forgotten' : VERB[a.kind][1]} in ${seconds.toFixed(1)}s`);
      return { id: a.id, kind: a.kind, status: 'done', seconds };
    }
    const msg = (e as Error).message;
    // Stopped in flight by the shutdown: a command terminated, or a download or upload aborted.
    if ((e instanceof CommandError && e.cancelled) || (opts.signal?.aborted && ((e as Error).name === 'AbortError' || e === opts.signal.reason))) {
      opts.log(`${a.id}: cancelled (shutting down); its scratch files are removed and the next apply builds it again`);
      return { id: a.id, kind: a.kind, status: 'cancelled', seconds, error: msg };
    }
    opts.log(`${a.id}: FAILED: ${msg}`);
    return { id: a.id, kind: a.kind, status: 'failed', seconds, error: msg };
  };
  const settle = async (a: Action, t0: number, work: () => Promise<void>): Promise<ActionResult> => {
    try {
      await work();
      return outcome(a, t0);
    } catch (e) {
      return outcome(a, t0, e);
    }
  };

  // Ready actions a kind can carry out together gather here for one turn of the event loop
  // (all that a finished dependency released join), then go in groups, each group one slot.
  const groups = new Map<string, { actions: Action[]; done: ((r: ActionResult) => void)[] }>();
  const runGroup = (actions: Action[]): Promise<ActionResult[]> =>
    limit(async () => {
      if (opts.signal?.aborted) return actions.map(shuttingDown);
      const t0 = Date.now();
      for (const a of actions) opts.log(`${a.id}: ${VERB[a.kind][0]} (${a.reason})`);
      let outs: (Effect | Error)[];
      try {
        outs = await kindOf(actions[0]!.resource).batch!.execute(actions, ctx);
      } catch (e) {
        return actions.map((a) => outcome(a, t0, e));
      }
      return Promise.all(
        actions.map((a, i) => {
          const out = outs[i];
          return out instanceof Error ? outcome(a, t0, out) : settle(a, t0, () => persist(out));
        }),
      );
    });
  const joinGroup = (key: string, a: Action): Promise<ActionResult> =>
    new Promise((resolve) => {
      let g = groups.get(key);
      if (!g) {
        const group = { actions: [] as Action[], done: [] as ((r: ActionResult) => void)[] };
        groups.set(key, group);
        g = group;
        setImmediate(() => {
          groups.delete(key);
          // Even groups, as many as may run at once (50 ready actions at --parallelism 4 go as
          // 13 + 13 + 13 + 11, in parallel) and none larger than the kind's size.
          const per = Math.min(kindOf(a.resource).batch!.size, Math.ceil(group.actions.length / Math.max(1, opts.parallelism)));
          for (let i = 0; i < group.actions.length; i += per) {
            const done = group.done.slice(i, i + per);
            void runGroup(group.actions.slice(i, i + per)).then((rs) => {
              for (const [k, r] of rs.entries()) done[k]!(r);
            });
          }
        });
      }
      g.actions.push(a);
      g.done.push(resolve);
    });

  const start = (a: Action): Promise<ActionResult> => {
    const existing = running.get(a.id);
    if (existing) return existing;
    const p = (async (): Promise<ActionResult> => {
      // Start (or join) each dependency first: the order of the plan's actions does not matter.
      const deps = await Promise.all(a.dependsOn.map((d) => (byId.has(d) ? start(byId.get(d)!) : Promise.resolve(undefined))));
      const failed = deps.find((d) => d && d.status !== 'done');
      if (failed && (failed.status === 'cancelled' || failed.status === 'not-started')) {
        return shuttingDown(a);
      }
      if (failed) {
        opts.log(`${a.id}: skipped, because ${failed.id} did not complete`);
        return { id: a.id, kind: a.kind, status: 'skipped', seconds: 0, error: `${failed.id} did not complete` };
      }
      const key = kindOf(a.resource).batch?.key(a);
      if (key !== undefined) return joinGroup(`${a.resource}:${key}`, a);
      return limit(async () => {
        if (opts.signal?.aborted) return shuttingDown(a);
        const t0 = Date.now();
        opts.log(`${a.id}: ${VERB[a.kind][0]} (${a.reason})`);
        return settle(a, t0, () => execute(a));
      });
    })();
    running.set(a.id, p);
    return p;
  };

  // Register every action before awaiting, so dependsOn always finds its promise.
  for (const a of todo) start(a);
  for (const r of await Promise.all(todo.map((a) => running.get(a.id)!))) results.set(r.id, r);
  for (const task of atEnd) await task().catch((e: Error) => opts.log(`tidying up: ${e.message}`));
  await journal.checkpoint();
  await (opts.cache as { save?: () => Promise<void> } | undefined)?.save?.();

  const counts = { created: 0, updated: 0, replaced: 0, deleted: 0, forgotten: 0, failed: 0, cancelled: 0, notStarted: 0 };
  const forgets = new Set(todo.filter((a) => a.kind === 'delete' && !a.destructive).map((a) => a.id));
  for (const r of results.values()) {
    if (r.status === 'cancelled') counts.cancelled++;
    else if (r.status === 'not-started') counts.notStarted++;
    else if (r.status !== 'done') counts.failed++;
    else if (r.kind === 'create') counts.created++;
    else if (r.kind === 'update') counts.updated++;
    else if (r.kind === 'replace') counts.replaced++;
    else if (r.kind === 'delete' && forgets.has(r.id)) counts.forgotten++;
    else if (r.kind === 'delete') counts.deleted++;
  }
  return { results: [...results.values()], counts };
}

/**
 * Removes what interrupted applies left: their scratch space in the state directory, and what
 * each kind finds beside the objects it made (build directories beside images). Run under the
 * lock by every apply, also one with nothing to change.
 */
export async function tidyInterrupted(stateDir: string, log: (line: string) => void, inventory?: Inventory): Promise<void> {
  const inv = inventory ?? (await readInventory(stateDir));
  // Kinds first: what they release may be recorded in the scratch space removed after.
  for (const k of KINDS) for (const line of (await k.tidy?.(Object.values(inv.objects), stateDir)) ?? []) log(line);
  for (const d of await removeAbandonedScratch(path.join(stateDir, 'scratch'))) log(`removed ${d}, scratch space left by an interrupted apply`);
}
