// load → observe → diff → plan. Level-triggered: every plan starts from what the host
// reports now, never from memory of an earlier run.
import type { ObservationCache, ObservedImage } from '../providers/image-file.js';
import { diffImages } from './diff-images.js';
import { readInventory, type Inventory } from './inventory.js';
import type { DesiredState } from './model.js';
import { observeMore, pathsToObserve } from './observe.js';
import { observationHash, type Plan } from './plan.js';

export interface PlanOptions {
  stateDir: string;
  allowReplace: boolean;
  prune: boolean;
  cache?: ObservationCache;
}

export interface PlanWithObservations {
  plan: Plan;
  observed: Map<string, ObservedImage | null>;
  inventory: Inventory;
}

export async function makePlan(state: DesiredState, opts: PlanOptions): Promise<Plan> {
  return (await planWithObservations(state, opts)).plan;
}

export async function planWithObservations(state: DesiredState, opts: PlanOptions): Promise<PlanWithObservations> {
  const inventory = await readInventory(opts.stateDir);
  const observed = new Map<string, ObservedImage | null>();
  await observeMore(observed, pathsToObserve(state, inventory), opts.cache);
  let diff = diffImages({ state, observed, inventory, allowReplace: opts.allowReplace, prune: opts.prune });
  // Source files are looked at only when an image must be built from them; each round
  // observes everything the previous one asked for, and a dependency chain is at most one level deep here.
  for (let round = 0; diff.needs.length && round < 3; round++) {
    await observeMore(observed, diff.needs, opts.cache);
    diff = diffImages({ state, observed, inventory, allowReplace: opts.allowReplace, prune: opts.prune });
  }
  const refusals = [...diff.refusals];
  for (const kind of ['pools', 'vms', 'backups'] as const) {
    for (const spec of Object.values(state[kind])) {
      refusals.push({ id: `${kind}.${spec.name}`, message: `${spec.origin}: ${kind} are not reconciled by this version yet; remove ${kind}.${spec.name} or use a release that supports it` });
    }
  }
  const observedHashes: Record<string, string> = {};
  for (const [p, o] of [...observed].sort(([a], [b]) => a.localeCompare(b))) observedHashes[p] = observationHash(o);
  const plan: Plan = {
    formatVersion: 1,
    createdAt: new Date().toISOString(),
    stateDir: opts.stateDir,
    options: { allowReplace: opts.allowReplace, prune: opts.prune },
    observed: observedHashes,
    actions: diff.actions,
    refusals,
    notes: diff.notes,
  };
  return { plan, observed, inventory };
}

/** Paths whose observation differs from the one a saved plan was made against. */
export async function movedSince(plan: Plan, cache?: ObservationCache): Promise<string[]> {
  const observed = new Map<string, ObservedImage | null>();
  await observeMore(observed, Object.keys(plan.observed), cache);
  return Object.entries(plan.observed).filter(([p, h]) => observationHash(observed.get(p)) !== h).map(([p]) => p);
}
