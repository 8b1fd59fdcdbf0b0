// load → observe → diff → plan. Level-triggered: every plan starts from what the host
// reports now, never from memory of an earlier run. Generic: the kinds (providers/registry.ts)
// say what to observe and what to do; this file only combines them.
import { observe, mergeTargets, type Observation } from '../providers/observe.js';
import type { StatCache as ObservationCache } from '../providers/common/stat-cache.js';
import { DISPLAY_ORDER, KINDS } from '../providers/registry.js';
import type { Virsh } from '../tools/virsh.js';
import { overdue } from '../backups/backup.js';
import { readBackupRecords } from '../backups/records.js';
import { orphans, readInventory, type Inventory } from './inventory.js';
import type { KindDiff } from './kind.js';
import { sourceImage, type DesiredState } from './model.js';
import { observationHash, type Action, type Plan, type Resource } from './plan.js';

export interface PlanOptions {
  stateDir: string;
  allowReplace: boolean;
  prune: boolean;
  cache?: ObservationCache;
  /** the libvirt connection; opened only when the state involves libvirt objects */
  virsh?: () => Virsh;
}

export interface PlanWithObservations {
  plan: Plan;
  observed: Observation;
  inventory: Inventory;
  /** per VM: what its running domain keeps until it restarts */
  pending: Record<string, string[]>;
}

export async function makePlan(state: DesiredState, opts: PlanOptions): Promise<Plan> {
  return (await planWithObservations(state, opts)).plan;
}

export async function planWithObservations(state: DesiredState, opts: PlanOptions): Promise<PlanWithObservations> {
  const inventory = await readInventory(opts.stateDir);
  // Every kind declares what it must see; each tool is asked once for all of it.
  const targets = mergeTargets(KINDS.map((k) => k.targets(state, inventory)));
  const obs = await observe(targets, {
    cache: opts.cache,
    virsh: () => {
      if (!opts.virsh) throw new Error('this plan needs a libvirt connection');
      return opts.virsh();
    },
  });
  const flags = { allowReplace: opts.allowReplace, prune: opts.prune };
  const d = diffAll(state, obs, inventory, flags);
  // Backups are taken by `backup run` and the watch service, never by apply; plans say
  // which schedules are overdue.
  const backupNotes = Object.keys(state.backups).length ? overdue(Object.values(state.backups), (await readBackupRecords(opts.stateDir)).lastSuccess) : [];
  const observedHashes: Record<string, string> = {};
  for (const [p, o] of obs.files) observedHashes[`file:${p}`] = observationHash(o);
  for (const [n, o] of obs.pools) observedHashes[`pool:${n}`] = observationHash(o);
  for (const [k, o] of obs.volumes) observedHashes[`volume:${k}`] = observationHash(o);
  for (const [k, o] of obs.domains) observedHashes[`domain:${k}`] = observationHash(o);
  const plan: Plan = {
    formatVersion: 1,
    createdAt: new Date().toISOString(),
    stateDir: opts.stateDir,
    connection: obs.connection,
    options: flags,
    observed: Object.fromEntries(Object.entries(observedHashes).sort(([a], [b]) => a.localeCompare(b))),
    actions: d.actions,
    refusals: d.refusals,
    notes: [...d.notes, ...backupNotes],
  };
  return { plan, observed: obs, inventory, pending: d.pending };
}

/**
 * The pure half of planning: every kind's diff of desired vs observed, combined. Kinds are
 * diffed in registry order (each sees the actions of those before it) and listed in display
 * order.
 */
export function diffAll(state: DesiredState, obs: Observation, inventory: Inventory, flags: { allowReplace: boolean; prune: boolean }) {
  // Prune is one set difference: the inventory minus what the YAML declares.
  const gone = orphans(
    inventory,
    KINDS.flatMap((k) => k.declared(state)),
  );
  const diffs = new Map<Resource, KindDiff>();
  const earlier: Action[] = [];
  for (const kind of KINDS) {
    const d = kind.diff({ state, observed: obs, inventory, ...flags, earlier, orphans: gone.filter(([, r]) => r.type === kind.resource) });
    diffs.set(kind.resource, d);
    earlier.push(...d.actions);
  }
  const refusals = DISPLAY_ORDER.flatMap((r) => diffs.get(r)?.refusals ?? []);
  // A path that could not be observed refuses the objects on it (each kind says so); one no
  // kind needed is still worth a note.
  const unneeded = [...obs.errors].filter(([p]) => !refusals.some((r) => r.message.includes(p))).map(([p, why]) => (why.includes(p) ? why : `cannot observe ${p}: ${why}`));
  const byDisplay = (a: Action, b: Action) => DISPLAY_ORDER.indexOf(a.resource) - DISPLAY_ORDER.indexOf(b.resource);
  return {
    actions: linkBuildDependencies(state, [...earlier].sort(byDisplay)),
    refusals,
    notes: [...unneeded, ...DISPLAY_ORDER.flatMap((r) => diffs.get(r)?.notes ?? [])],
    pending: Object.assign({}, ...[...diffs.values()].map((d) => d.pending ?? {})) as Record<string, string[]>,
  };
}

/**
 * A build waits for the build of the image it copies or overlays, whatever kind either is;
 * any action waits only for dependencies that have work to do in this plan (a domain's
 * disks are attached once the images they name are built; an image already in sync is
 * nothing to wait for).
 */
function linkBuildDependencies(state: DesiredState, actions: Action[]): Action[] {
  const kind = new Map(actions.map((a) => [a.id, a.kind]));
  const building = (id: string) => kind.get(id) === 'create' || kind.get(id) === 'replace';
  for (const a of actions) {
    if (a.id.startsWith('images.') && building(a.id)) {
      const s = state.images[a.id.slice('images.'.length)]?.source;
      const dep = s && sourceImage(s);
      if (dep && building(`images.${dep}`) && !a.dependsOn.includes(`images.${dep}`)) a.dependsOn.push(`images.${dep}`);
    }
    a.dependsOn = a.dependsOn.filter((dep) => kind.has(dep) && kind.get(dep) !== 'no-op');
  }
  return actions;
}
