// load → observe → diff → plan. Level-triggered: every plan starts from what the host
// reports now, never from memory of an earlier run. Generic: the kinds (providers/registry.ts)
// say what to observe and what to do; this file only combines them.
import { observe, observedObjects, mergeTargets, unobservable, type Observation } from '../providers/observe.js';
import type { StatCache } from '../providers/common/stat-cache.js';
import { KINDS } from '../providers/registry.js';
import { orphans, readInventory, type Inventory, type InventoryRecord } from './inventory.js';
import type { Kind, KindDiff } from './kind.js';
import type { DesiredState } from './model.js';
import { observationHash, orphanId, type Action, type Plan, type Resource } from './plan.js';
import { holdForWindows } from './windows.js';
import { remoteRefusals } from './remote.js';
import { isRemoteUri, type Virsh } from '../tools/virsh.js';

export interface PlanOptions {
  stateDir: string;
  allowReplace: boolean;
  prune: boolean;
  cache?: StatCache;
  /** the libvirt connection; opened only when the state involves libvirt objects */
  virsh?: () => Virsh;
  /** the time maintenance windows are judged at (default: now) */
  now?: Date;
  /** make what waits for a maintenance window now (plan/apply --outside-window) */
  outsideWindow?: boolean;
}

export interface PlanWithObservations {
  plan: Plan;
  observed: Observation;
  inventory: Inventory;
  /** per VM: what its running domain keeps until it restarts */
  pending: Record<string, string[]>;
}

export async function planWithObservations(state: DesiredState, opts: PlanOptions): Promise<PlanWithObservations> {
  const inventory = await readInventory(opts.stateDir);
  // Every kind declares what it must see; each tool is asked once for all of it.
  const targets = mergeTargets(KINDS.map((k) => k.targets(state, inventory)));
  const obs = await observe(targets, {
    stateDir: opts.stateDir,
    cache: opts.cache,
    virsh: () => {
      if (!opts.virsh) throw new Error('this plan needs a libvirt connection');
      return opts.virsh();
    },
  });
  const flags = { allowReplace: opts.allowReplace, prune: opts.prune };
  const d = diffAll(state, obs, inventory, flags);
  // On a connection to another host, what reconcile would do with files here is refused.
  const uri = opts.virsh?.().uri;
  const remote = uri && isRemoteUri(uri) ? remoteRefusals(state, uri) : [];
  if (remote.length) {
    const refused = new Set(remote.map((r) => r.id));
    d.actions = d.actions.filter((a) => !refused.has(a.id));
    d.refusals = [...remote, ...d.refusals.filter((r) => !refused.has(r.id))];
  }
  // What a saved plan was made against: every object observed, whatever its kind.
  const observedHashes: Record<string, string> = {};
  for (const [key, o] of observedObjects(obs)) observedHashes[key] = observationHash(o);
  const plan: Plan = {
    formatVersion: 1,
    createdAt: new Date().toISOString(),
    stateDir: opts.stateDir,
    connection: obs.connection,
    options: opts.outsideWindow ? { ...flags, outsideWindow: true } : flags,
    observed: Object.fromEntries(Object.entries(observedHashes).sort(([a], [b]) => a.localeCompare(b))),
    actions: d.actions,
    refusals: d.refusals,
    notes: d.notes,
  };
  return { plan: opts.outsideWindow ? plan : holdForWindows(plan, state.windows, opts.now ?? new Date()), observed: obs, inventory, pending: d.pending };
}

/**
 * The pure half of planning: every kind's diff of desired vs observed, combined. Kinds are
 * diffed in registry order, each after the kinds whose actions it reads (Kind.diffAfter), and
 * listed in registry order.
 */
export function diffAll(state: DesiredState, obs: Observation, inventory: Inventory, flags: { allowReplace: boolean; prune: boolean }) {
  // Prune is one set difference: the inventory minus what the YAML declares. An object
  // recorded under another libvirt connection than this run's is not looked at here: it is
  // neither forgotten as "gone" nor deleted, and a prune of it is refused.
  const elsewhere = (r: InventoryRecord) => 'uri' in r && r.uri !== undefined && obs.connection !== undefined && r.uri !== obs.connection;
  const all = orphans(
    inventory,
    KINDS.flatMap((k) => k.declared(state)),
  );
  const gone = all.filter(([, r]) => !elsewhere(r));
  const away = all
    .filter(([, r]) => elsewhere(r))
    .map(([k, r]) => ({
      id: orphanId(k),
      message: `recorded as made through ${(r as { uri: string }).uri}, but this run is connected to ${obs.connection}: pass --connect ${(r as { uri: string }).uri} (or the YAML's connection) to prune it`,
    }));
  const diffs = new Map<Resource, KindDiff>();
  const earlier: Action[] = [];
  for (const kind of diffOrder(KINDS)) {
    const d = kind.diff({ state, observed: obs, inventory, ...flags, earlier, orphans: gone.filter(([, r]) => r.type === kind.resource) });
    diffs.set(kind.resource, d);
    earlier.push(...d.actions);
  }
  const listed = KINDS.map((k) => diffs.get(k.resource)!);
  const refusals = [...(flags.prune ? away : []), ...listed.flatMap((d) => d.refusals)];
  // A path that could not be observed refuses the objects on it (each kind says so); one no
  // kind needed is still worth a note.
  const unneeded = [...obs.errors.keys()].filter((p) => !refusals.some((r) => r.message.includes(p))).map((p) => unobservable(obs.errors, p));
  const byDisplay = (a: Action, b: Action) => KINDS.findIndex((k) => k.resource === a.resource) - KINDS.findIndex((k) => k.resource === b.resource);
  return {
    actions: keepPendingDependencies([...earlier].sort(byDisplay)),
    refusals,
    notes: [...unneeded, ...(flags.prune ? [] : away.map((a) => `${a.id}: ${a.message}`)), ...listed.flatMap((d) => d.notes)],
    pending: Object.assign({}, ...listed.map((d) => d.pending ?? {})) as Record<string, string[]>,
  };
}

/** Registry order, except that a kind comes after the kinds it reads (Kind.diffAfter). */
function diffOrder(kinds: readonly Kind[]): Kind[] {
  const out: Kind[] = [];
  const visit = (k: Kind, path: Resource[]) => {
    if (out.includes(k)) return;
    if (path.includes(k.resource)) throw new Error(`kinds read each other's actions in a cycle: ${[...path, k.resource].join(' -> ')}`);
    for (const r of k.diffAfter ?? []) {
      const dep = kinds.find((x) => x.resource === r);
      if (!dep) throw new Error(`kind ${k.resource} reads the actions of ${r}, which is not registered`);
      visit(dep, [...path, k.resource]);
    }
    out.push(k);
  };
  for (const k of kinds) visit(k, []);
  return out;
}

/**
 * Kinds name every object an action needs; it waits only for those with work to do in this
 * plan (a domain's disks are attached once the images they name are built; an image already
 * in sync is nothing to wait for).
 */
function keepPendingDependencies(actions: Action[]): Action[] {
  const kind = new Map(actions.map((a) => [a.id, a.kind]));
  for (const a of actions) a.dependsOn = [...new Set(a.dependsOn)].filter((dep) => kind.has(dep) && kind.get(dep) !== 'no-op');
  return actions;
}
