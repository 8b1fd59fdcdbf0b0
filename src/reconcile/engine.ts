// load → observe → diff → plan. Level-triggered: every plan starts from what the host
// reports now, never from memory of an earlier run.
import type { ObservationCache } from '../providers/image-file.js';
import type { Virsh } from '../providers/virsh.js';
import { diffImages } from './diff-images.js';
import { diffPools } from './diff-pools.js';
import { diffVolumes, imagePathResolver } from './diff-volumes.js';
import { readInventory, type Inventory } from './inventory.js';
import type { DesiredState } from './model.js';
import { filesToObserve, libvirtToObserve, observeLibvirt, observeMore, type Observation } from './observe.js';
import { observationHash, type Action, type Plan } from './plan.js';

export interface PlanOptions {
  stateDir: string;
  allowReplace: boolean;
  prune: boolean;
  cache?: ObservationCache;
  /** the libvirt connection; needed only when the state involves pools or volumes */
  virsh?: () => Virsh;
}

export interface PlanWithObservations {
  plan: Plan;
  observed: Observation;
  inventory: Inventory;
}

export async function makePlan(state: DesiredState, opts: PlanOptions): Promise<Plan> {
  return (await planWithObservations(state, opts)).plan;
}

export async function planWithObservations(state: DesiredState, opts: PlanOptions): Promise<PlanWithObservations> {
  const inventory = await readInventory(opts.stateDir);
  const obs: Observation = { files: new Map(), pools: new Map(), volumes: new Map() };
  const lv = libvirtToObserve(state, inventory);
  let virsh: Virsh | undefined;
  const [, libvirt] = await Promise.all([
    observeMore(obs.files, filesToObserve(state, inventory), opts.cache),
    lv.pools.length || lv.volumes.length ? observeLibvirt((virsh = opts.virsh!()), lv.pools, lv.volumes, opts.cache) : undefined,
  ]);
  if (libvirt) Object.assign(obs, { pools: libvirt.pools, volumes: libvirt.volumes });

  const flags = { allowReplace: opts.allowReplace, prune: opts.prune };
  const diffAll = () => {
    const volumes = diffVolumes({ state, ...obs, inventory, ...flags });
    const images = diffImages({ state, observed: obs.files, inventory, ...flags, pathOf: imagePathResolver(state, obs.volumes, obs.pools) });
    const pools = diffPools({ state, pools: obs.pools, inventory, ...flags, prunedVolumes: volumes.prunedVolumes });
    return { volumes, images, pools, needs: [...images.needs, ...volumes.needs] };
  };
  let d = diffAll();
  // Source files (and qcow2 volumes whose options are declared) are read only when a
  // decision needs them; each round reads everything the previous one asked for.
  for (let round = 0; d.needs.length && round < 3; round++) {
    await observeMore(obs.files, d.needs, opts.cache);
    d = diffAll();
  }
  const actions = linkBuildDependencies(state, [...d.pools.actions, ...d.images.actions, ...d.volumes.actions]);
  const refusals = [...d.pools.refusals, ...d.images.refusals, ...d.volumes.refusals];
  for (const kind of ['vms', 'backups'] as const) {
    for (const spec of Object.values(state[kind])) {
      refusals.push({ id: `${kind}.${spec.name}`, message: `${spec.origin}: ${kind} are not reconciled by this version yet; remove ${kind}.${spec.name} or use a release that supports it` });
    }
  }
  const observedHashes: Record<string, string> = {};
  for (const [p, o] of obs.files) observedHashes[`file:${p}`] = observationHash(o);
  for (const [n, o] of obs.pools) observedHashes[`pool:${n}`] = observationHash(o);
  for (const [k, o] of obs.volumes) observedHashes[`volume:${k}`] = observationHash(o);
  const plan: Plan = {
    formatVersion: 1,
    createdAt: new Date().toISOString(),
    stateDir: opts.stateDir,
    connection: virsh?.uri,
    options: flags,
    observed: Object.fromEntries(Object.entries(observedHashes).sort(([a], [b]) => a.localeCompare(b))),
    actions,
    refusals,
    notes: [...d.pools.notes, ...d.images.notes, ...d.volumes.notes],
  };
  return { plan, observed: obs, inventory };
}

/** A build waits for the build of the image it copies or overlays, whatever kind either is. */
function linkBuildDependencies(state: DesiredState, actions: Action[]): Action[] {
  const building = new Set(actions.filter((a) => a.kind === 'create' || a.kind === 'replace').map((a) => a.id));
  for (const a of actions) {
    if (!a.id.startsWith('images.') || (a.kind !== 'create' && a.kind !== 'replace')) continue;
    const s = state.images[a.id.slice('images.'.length)]?.source;
    const dep = s?.kind === 'image' ? s.image : s?.kind === 'backing' && 'image' in s ? s.image : undefined;
    if (dep && building.has(`images.${dep}`) && !a.dependsOn.includes(`images.${dep}`)) a.dependsOn.push(`images.${dep}`);
  }
  return actions;
}

/** Objects whose observation differs from the one a saved plan was made against. */
export async function movedSince(plan: Plan, opts: { cache?: ObservationCache; virsh?: () => Virsh }): Promise<string[]> {
  const keys = Object.keys(plan.observed);
  const files = new Map();
  await observeMore(files, keys.filter((k) => k.startsWith('file:')).map((k) => k.slice(5)), opts.cache);
  const poolNames = keys.filter((k) => k.startsWith('pool:')).map((k) => k.slice(5));
  const vols = keys.filter((k) => k.startsWith('volume:')).map((k) => {
    const [pool, ...name] = k.slice(7).split('/');
    return { pool: pool!, name: name.join('/') };
  });
  const lv = poolNames.length || vols.length ? await observeLibvirt(opts.virsh!(), poolNames, vols, opts.cache) : { pools: new Map(), volumes: new Map() };
  const now: Record<string, string> = {};
  for (const [p, o] of files) now[`file:${p}`] = observationHash(o);
  for (const [n, o] of lv.pools) now[`pool:${n}`] = observationHash(o);
  for (const [k, o] of lv.volumes) now[`volume:${k}`] = observationHash(o);
  return keys.filter((k) => now[k] !== plan.observed[k]).map((k) => k.replace(/^(file|pool|volume):/, (m) => (m === 'file:' ? '' : m)));
}
