// load → observe → diff → plan. Level-triggered: every plan starts from what the host
// reports now, never from memory of an earlier run. Generic: the kinds (providers/registry.ts)
// say what to observe and what to do; this file only combines them.
import { observe, mergeTargets, type Observation } from '../providers/observe.js';
import { imagePathResolver } from '../providers/common/image-paths.js';
import { interruptedPublishes } from '../providers/image/interrupted.js';
import type { ObservationCache } from '../providers/image/files.js';
import { DISPLAY_ORDER, KINDS } from '../providers/registry.js';
import type { Virsh } from '../tools/virsh.js';
import { overdue } from './backup.js';
import { readBackupRecords } from './backup-records.js';
import { orphans, readInventory, type Inventory } from './inventory.js';
import type { KindDiff } from './kind.js';
import { sourceImage, type DesiredState } from './model.js';
import { observationHash, orphanId, type Action, type Plan } from './plan.js';

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
  const interrupted = await interruptedPublishes(inventory, obs.files);
  // Prune is one set difference: the inventory minus what the YAML declares.
  const gone = orphans(inventory, KINDS.flatMap((k) => k.declared(state)));
  const pathOf = imagePathResolver(state, obs.volumes, obs.pools);
  // Which declared images, files or volumes, are overlays on which path: a base is never
  // replaced or pruned under an overlay, whichever kinds the two are.
  const overlaysOf = (p: string) => Object.values(state.images).filter((s) => {
    const o = s.location.kind === 'path' ? obs.files.get(s.location.path) : obs.volumes.get(`${s.location.pool}/${s.location.volume}`);
    return o?.backing === p;
  }).map((s) => `images.${s.name}`);
  const diffs: KindDiff[] = [];
  const earlier: Action[] = [];
  for (const kind of KINDS) {
    const d = kind.diff({
      state, observed: obs, inventory, ...flags, earlier, overlaysOf, pathOf, interrupted,
      orphans: gone.filter(([, r]) => r.type === kind.resource),
      kvm: obs.kvm ?? { usable: true, virtType: 'kvm' },
    });
    diffs.push(d);
    earlier.push(...d.actions);
  }
  // A path that could not be observed (a directory where an image must be, an unreadable
  // file) refuses the objects on it; everything else is planned as usual. Source files are
  // refused by the kind that needs them, only when it does.
  const unobservable = [...obs.errors].map(([p, why]) => ({ path: p, why: why.includes(p) ? why : `cannot observe ${p}: ${why}` }));
  const observationRefusals = unobservable.flatMap(({ path: p, why }) => [
    ...Object.values(state.images).filter((s) => s.location.kind === 'path' && s.location.path === p).map((s) => ({ id: `images.${s.name}`, message: `${s.origin}: ${why}` })),
    // An inventory object that cannot be looked at cannot be pruned safely.
    ...(opts.prune ? gone.filter(([, r]) => r.type === 'image' && r.path === p).map(([k]) => ({ id: orphanId(k), message: why })) : []),
    ...Object.values(state.vms).filter((vm) => vm.disks.some((dk) => dk.path === p)).map((vm) => ({ id: `vms.${vm.name}`, message: `${vm.origin}: disk ${why}` })),
  ]);
  const refusals = [...observationRefusals, ...diffs.flatMap((d) => d.refusals)];
  // Refused twice (the path, and the diff that needed it): once is enough.
  const uniqueRefusals = refusals.filter((r, i) => refusals.findIndex((x) => x.id === r.id && x.message === r.message) === i);
  const orphanErrors = unobservable.filter((u) => !uniqueRefusals.some((r) => r.message.includes(u.why))).map((u) => u.why);
  const byDisplay = (a: Action, b: Action) => DISPLAY_ORDER.indexOf(a.resource) - DISPLAY_ORDER.indexOf(b.resource);
  const actions = linkBuildDependencies(state, [...earlier].sort(byDisplay));
  const notesOf = (r: string) => diffs[KINDS.findIndex((k) => k.resource === r)]!.notes;
  // Backups are taken by `backup run` and the watch service, never by apply; plans say
  // which schedules are overdue.
  const backupNotes = Object.keys(state.backups).length
    ? overdue(Object.values(state.backups), (await readBackupRecords(opts.stateDir)).lastSuccess)
    : [];
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
    actions,
    refusals: uniqueRefusals,
    notes: [...orphanErrors, ...DISPLAY_ORDER.flatMap(notesOf), ...backupNotes],
  };
  return { plan, observed: obs, inventory, pending: Object.assign({}, ...diffs.map((d) => d.pending ?? {})) as Record<string, string[]> };
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
