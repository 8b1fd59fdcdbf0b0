// load → observe → diff → plan. Level-triggered: every plan starts from what the host
// reports now, never from memory of an earlier run.
import { domcapsSignature } from '../providers/domain/domcaps-signature.js';
import { kvmAccess, type KvmAccess } from '../providers/domain/kvm-access.js';
import type { ObservationCache } from '../providers/image/files.js';
import type { Virsh } from '../tools/virsh.js';
import { overdue } from './backup.js';
import { readBackupRecords } from './backup-records.js';
import { diffImages } from '../providers/image/diff.js';
import { diffPools } from '../providers/pool/diff.js';
import { diffVms } from '../providers/domain/diff.js';
import { diffVolumes, imagePathResolver } from '../providers/volume/diff.js';
import { readInventory, type Inventory } from './inventory.js';
import { sourceImage, type DesiredState } from './model.js';
import { filesToObserve, interruptedPublishes, libvirtToObserve, observeLibvirt, observeMore, type Observation } from './observe.js';
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
  /** per VM: what its running domain keeps until it restarts */
  pending: Record<string, string[]>;
}

export async function makePlan(state: DesiredState, opts: PlanOptions): Promise<Plan> {
  return (await planWithObservations(state, opts)).plan;
}

export async function planWithObservations(state: DesiredState, opts: PlanOptions): Promise<PlanWithObservations> {
  const inventory = await readInventory(opts.stateDir);
  const obsErrors = new Map<string, string>();
  const obs: Observation = { files: new Map(), pools: new Map(), volumes: new Map(), domains: new Map(), caps: new Map() };
  const lv = libvirtToObserve(state, inventory);
  let virsh: Virsh | undefined;
  const needsLibvirt = lv.pools.length || lv.volumes.length || lv.domains.length;
  // New domains are kvm only where the QEMU user can open /dev/kvm; one virt type's
  // capabilities (bus support) serve every declared domain.
  let kvm: KvmAccess | undefined;
  if (lv.domains.length) {
    virsh = opts.virsh!();
    kvm = await kvmAccess(virsh.uri);
    lv.virtTypes = [kvm.virtType];
    lv.capsSignature = await domcapsSignature(kvm.usable);
  }
  const [, libvirt] = await Promise.all([
    observeMore(obs.files, filesToObserve(state, inventory), opts.cache, obsErrors),
    needsLibvirt ? observeLibvirt((virsh ??= opts.virsh!()), lv, opts.cache) : undefined,
  ]);
  if (libvirt) Object.assign(obs, libvirt);

  const flags = { allowReplace: opts.allowReplace, prune: opts.prune };
  const interrupted = await interruptedPublishes(inventory, obs.files);
  // Which declared images, files or volumes, are overlays on which path: a base is never
  // replaced or pruned under an overlay, whichever kinds the two are.
  const overlaysOf = (p: string) => Object.values(state.images).filter((s) => {
    const o = s.location.kind === 'path' ? obs.files.get(s.location.path) : obs.volumes.get(`${s.location.pool}/${s.location.volume}`);
    return o?.backing === p;
  }).map((s) => `images.${s.name}`);
  const diffAll = () => {
    const volumes = diffVolumes({ state, ...obs, inventory, ...flags, overlaysOf });
    const images = diffImages({ state, observed: obs.files, inventory, ...flags, pathOf: imagePathResolver(state, obs.volumes, obs.pools), overlaysOf, interrupted });
    const pools = diffPools({ state, pools: obs.pools, inventory, ...flags, prunedVolumes: volumes.prunedVolumes });
    const vms = diffVms({ state, domains: obs.domains, caps: obs.caps, files: obs.files, volumes: obs.volumes, inventory, prune: opts.prune, kvm: kvm ?? { usable: true, virtType: 'kvm' } });
    return { volumes, images, pools, vms, needs: [...images.needs, ...volumes.needs, ...vms.needs] };
  };
  let d = diffAll();
  // Source files (and qcow2 volumes whose options are declared) are read only when a
  // decision needs them; each round reads everything the previous one asked for.
  for (let round = 0; d.needs.length && round < 3; round++) {
    await observeMore(obs.files, d.needs, opts.cache, obsErrors);
    d = diffAll();
  }
  // A path that could not be observed (a directory where an image must be, an unreadable
  // file) refuses the objects on it; everything else is planned as usual.
  const unobservable = [...obsErrors].map(([p, why]) => ({ path: p, why: why.includes(p) ? why : `cannot observe ${p}: ${why}` }));
  const observationRefusals = unobservable.flatMap(({ path: p, why }) => [
    ...Object.values(state.images).filter((s) => s.location.kind === 'path' && s.location.path === p).map((s) => ({ id: `images.${s.name}`, message: `${s.origin}: ${why}` })),
    ...Object.values(state.images).filter((s) => (s.source.kind === 'file' && s.source.file === p) || (s.source.kind === 'backing' && 'path' in s.source && s.source.path === p))
      .map((s) => ({ id: `images.${s.name}`, message: `${s.origins.source ?? s.origin}: source ${why}` })),
    // An inventory object that cannot be looked at cannot be pruned safely.
    ...(opts.prune ? Object.values(inventory.objects).filter((r) => r.type === 'image' && r.path === p && !Object.values(state.images).some((s) => s.location.kind === 'path' && s.location.path === p))
      .map(() => ({ id: `inventory:${p}`, message: why })) : []),
    ...Object.values(state.vms).filter((vm) => vm.disks.some((dk) => dk.path === p)).map((vm) => ({ id: `vms.${vm.name}`, message: `${vm.origin}: disk ${why}` })),
  ]);
  const orphanErrors = unobservable.filter((u) => !observationRefusals.some((r) => r.message.endsWith(u.why))).map((u) => u.why);
  const actions = linkBuildDependencies(state, [...d.pools.actions, ...d.images.actions, ...d.volumes.actions, ...d.vms.actions]);
  const refusals = [...observationRefusals, ...d.pools.refusals, ...d.images.refusals, ...d.volumes.refusals, ...d.vms.refusals];
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
    connection: virsh?.uri,
    options: flags,
    observed: Object.fromEntries(Object.entries(observedHashes).sort(([a], [b]) => a.localeCompare(b))),
    actions,
    refusals,
    notes: [...orphanErrors, ...d.pools.notes, ...d.images.notes, ...d.volumes.notes, ...d.vms.notes, ...backupNotes],
  };
  return { plan, observed: obs, inventory, pending: d.vms.pending };
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
