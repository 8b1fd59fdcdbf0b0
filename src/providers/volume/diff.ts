// Images declared with `pool:` vs the volumes libvirt reports. Same rules as image files
// (grow in place, refuse shrink, replace only with --allow-replace, never touch protect:
// true), expressed through what libvirt's volume API can do.
import { imagePathResolver } from '../common/image-paths.js';
import type { DiskUse } from '../common/disk-users.js';
import { ABSENT, type DirectoryContent, type Observed } from '../observe.js';
import { seedContentOnly } from '../common/cloud-init.js';
import { planFileInputs } from '../common/file-inputs.js';
import type { SmallFileDigest } from '../common/small-files.js';
import { formatOfDriver, sizeTolerance } from '../image/formats.js';
import type { ObservedImage } from '../image/observe.js';
import type { ObservedPool } from '../../tools/libvirt-pool.js';
import { VOL_FORMAT, type ObservedVolume, type VolumeBuild } from '../../tools/libvirt-volume.js';
import { changeableBy, created, decideSize, imageOptions, keepAdopted, octal, permissionChanges, reasonOf, replaceRefusal, stateDirHint, wipeChange } from '../common/decisions.js';
import { orderByDependency, recordedChanges, recordedOptions } from '../image/diff.js';
import { recordKey, volumeIsOurs, type Inventory, type InventoryRecord, type VolumeRecord } from '../../reconcile/inventory.js';
import { article, FILE_POOLS, imageSecretUsage, LUN_POOLS, type DesiredState, type ImageSpec } from '../../reconcile/model.js';
import type { VolumeOp } from './ops.js';
import { inSync, orphanId, type NoOp, type Action, type Change, type Refusal } from '../../reconcile/plan.js';
import { formatSize } from '../../reconcile/sizes.js';

export interface VolumeDiff {
  actions: Action<VolumeOp | NoOp>[];
  refusals: Refusal[];
  notes: string[];
}

export const volumeKey = (pool: string, volume: string) => `${pool}/${volume}`;

// Resizing through libvirt: files (qemu-img resize / truncate), LVs (lvresize), RBD images.
const RESIZABLE_POOLS = new Set(['dir', 'fs', 'netfs', 'logical', 'rbd']);

export function diffVolumes(input: {
  state: DesiredState;
  pools: Map<string, Observed<ObservedPool>>;
  volumes: Map<string, Observed<ObservedVolume>>;
  files: Map<string, Observed<ObservedImage>>;
  inventory: Inventory;
  allowReplace: boolean;
  prune: boolean;
  /** the declared images (files and volumes alike) that are overlays on a path */
  overlaysOf: (path: string) => string[];
  /** volume records the YAML no longer declares (inventory minus desired) */
  orphans: [string, InventoryRecord][];
  /** which domains use a volume (by pool/name, or its path) as a disk, and what a delete of it must wait for */
  diskUse: (key: string, path: string | undefined) => DiskUse;
  /** paths that could not be observed, with why */
  errors: Map<string, string>;
  /** sha256 of the cloud-init seed files observed */
  contents: Map<string, SmallFileDigest>;
  /** what is at declared pools' target directories */
  directories?: Map<string, DirectoryContent>;
}): VolumeDiff {
  const { state, pools, volumes, files, inventory } = input;
  const out: VolumeDiff = { actions: [], refusals: [], notes: [] };
  /** An observed file, or undefined (absent, or not observed: `files.has` tells which). */
  const fileAt = (p: string) => {
    const f = files.get(p);
    return f?.exists ? f : undefined;
  };
  const unobserved = (p: string) => input.errors.get(p) ?? `${p} was not observed`;
  const pathOf = imagePathResolver(state, volumes, pools);
  const refuse = (id: string, message: string) => out.refusals.push({ id, message });
  const elsewhere = stateDirHint(inventory);

  const specs = orderByDependency(state).filter((s) => s.location.kind === 'pool');

  for (const spec of specs) {
    if (spec.location.kind !== 'pool') continue;
    const id = `images.${spec.name}`;
    const { pool, volume } = spec.location;
    const poolSpec = state.pools[pool]!;
    const poolFound = pools.get(pool);
    const poolObs = poolFound === undefined ? undefined : poolFound.exists ? poolFound : null;
    const fileBased = FILE_POOLS.includes(poolSpec.type);
    const poolPending = poolObs === null;
    // A pool reconcile did not define, and the YAML does not adopt, is left alone: so are its volumes.
    const poolRec = inventory.objects[recordKey({ type: 'pool', name: pool })];
    const poolOurs = poolRec?.type === 'pool' && (poolRec.status !== 'building' || poolRec.uuid === poolObs?.uuid);
    if (poolObs && !poolOurs && !poolSpec.adopt) {
      refuse(id, `${spec.origin}: pool ${pool} exists and reconcile did not define it (see pools.${pool}); add adopt: true to pools.${pool} to manage volumes in it`);
      continue;
    }
    if (poolObs && !poolObs.active && !poolSpec.active) {
      refuse(id, `${spec.origin}: pool ${pool} is inactive (active: false), so its volumes cannot be reconciled`);
      continue;
    }
    if (poolObs && poolObs.definition.type !== poolSpec.type) {
      out.notes.push(`${id}: reconciled once pools.${pool} has been replaced (run apply again after it)`);
      continue;
    }
    const key = volumeKey(pool, volume);
    // An existing pool that is not running cannot list its volumes: they may well be there
    // (a stopped fs pool is unmounted). Nothing is created blind; the apply that starts the
    // pool is followed by one that sees them.
    if (poolObs && !poolObs.active) {
      out.notes.push(`${id}: pool ${pool} is not running, so volume ${volume} cannot be seen; it is reconciled by the next apply after the pool starts`);
      continue;
    }
    const found = poolPending ? ABSENT : volumes.get(key);
    if (found === undefined) continue; // not observed: libvirt said why, and the plan fails with it
    const obs = found.exists ? found : null;
    const record = inventory.objects[recordKey({ type: 'volume', pool, volume })] as VolumeRecord | undefined;
    const ours = !!record && !!obs && volumeIsOurs(record, obs);
    const poolDeps = poolPending || (poolObs && !poolObs.active) ? [`pools.${pool}`] : [];
    const inputs = planFileInputs(spec, id, input.contents, input.errors);
    if (!inputs.ok) {
      refuse(id, inputs.refusal);
      continue;
    }
    out.notes.push(...inputs.warnings);
    const seed = inputs.seed;
    const seedDigest = seed?.digest;

    const build = (): { build: VolumeBuild; dependsOn: string[] } | undefined => {
      // A build waits for its pool, and for the image it copies or overlays (whichever kind that is).
      const source = spec.source;
      const from = source.kind === 'image' ? source.image : source.kind === 'backing' && 'image' in source ? source.image : undefined;
      // An encrypted volume is made with its secret (libvirt hands it to qemu-img): that comes first.
      const secretUsage = spec.encryption ? imageSecretUsage(state, spec) : undefined;
      const secret = secretUsage ? Object.values(state.secrets).find((x) => x.usage === 'volume' && x.usageId === secretUsage) : undefined;
      const deps = [...poolDeps, ...(from ? [`images.${from}`] : []), ...(secret ? [`secrets.${secret.name}`] : [])];
      const base = {
        pool,
        name: volume,
        format: spec.format,
        fileBased,
        qcow2: spec.qcow2,
        permissions: spec.permissions,
        ...(secretUsage ? { encryption: { secretUsage } } : {}),
      };
      const s = spec.source;
      // A seed's capacity is the size of the ISO, known once the apply has built it.
      if (seed) return { build: { ...base, capacity: 0, source: { kind: 'seed', entries: seed.entries } }, dependsOn: deps };
      if (s.kind === 'blank') {
        if (spec.size === undefined) {
          refuse(id, `${spec.origin}: volume ${volume} does not exist; images.${spec.name} adopts it and declares no size to create it with`);
          return undefined;
        }
        return { build: { ...base, capacity: spec.size, source: { kind: 'blank' } }, dependsOn: deps };
      }
      if (s.kind === 'backing') {
        const dep = 'image' in s ? state.images[s.image]! : undefined;
        const backingPath = dep ? pathOf(dep) : (s as { path: string }).path;
        if (!backingPath) {
          refuse(id, `${spec.origins.source ?? spec.origin}: the path of images.${dep?.name} is not known before it exists; apply once more after it is created`);
          return undefined;
        }
        const size = spec.size ?? (dep ? sizeOf(dep) : fileAt(backingPath)?.virtualSize);
        if (size === undefined) {
          refuse(id, `${spec.origins.source ?? spec.origin}: backing file ${files.has(backingPath) ? `${backingPath} does not exist` : unobserved(backingPath)}`);
          return undefined;
        }
        const fmt = dep ? (dep.location.kind === 'pool' ? VOL_FORMAT[dep.format] : driverName(dep.format)) : (fileAt(backingPath)?.driver ?? 'raw');
        return { build: { ...base, capacity: size, backing: { path: backingPath, format: fmt }, source: { kind: 'blank' } }, dependsOn: deps };
      }
      if (s.kind === 'image') {
        const dep = state.images[s.image]!;
        const size = spec.size ?? sizeOf(dep);
        if (size === undefined) {
          refuse(id, `${spec.origins.source ?? spec.origin}: the size of images.${dep.name} is not known; declare size`);
          return undefined;
        }
        if (dep.location.kind === 'pool') {
          return { build: { ...base, capacity: size, source: { kind: 'volume', pool: dep.location.pool, name: dep.location.volume } }, dependsOn: deps };
        }
        return { build: { ...base, capacity: size, source: { kind: 'file', path: dep.location.path, driver: driverName(dep.format) } }, dependsOn: deps };
      }
      if (s.kind === 'file') {
        if (!files.has(s.file)) {
          refuse(id, `${spec.origins.source ?? spec.origin}: source ${unobserved(s.file)}`);
          return undefined;
        }
        const src = fileAt(s.file);
        if (!src) {
          refuse(id, `${spec.origins.source ?? spec.origin}: source ${s.file} does not exist`);
          return undefined;
        }
        if (spec.size !== undefined && spec.size < src.virtualSize) {
          refuse(
            id,
            `${spec.origins.size ?? spec.origin}: size ${formatSize(spec.size)} is smaller than its source ${s.file} (${formatSize(src.virtualSize)}); the volume would lose data`,
          );
          return undefined;
        }
        return { build: { ...base, capacity: spec.size ?? src.virtualSize, source: { kind: 'file', path: s.file, driver: src.driver } }, dependsOn: deps };
      }
      refuse(id, `${spec.origins.source ?? spec.origin}: building a volume from source.${s.kind} is not supported by this version`);
      return undefined;
    };

    const sizeOf = (dep: ImageSpec): number | undefined => {
      if (dep.size !== undefined) return dep.size;
      if (dep.location.kind === 'pool') {
        const v = volumes.get(volumeKey(dep.location.pool, dep.location.volume));
        return v?.exists ? v.capacity : undefined;
      }
      return fileAt(dep.location.path)?.virtualSize;
    };

    // A pool undefined by hand and defined again: the volumes reconcile made are still in its
    // directory, and are found there once libvirt lists them (not created over).
    const dir = poolPending && fileBased && poolSpec.path ? input.directories?.get(poolSpec.path) : undefined;
    if (!obs && record?.status === 'ready' && dir?.kind === 'directory' && dir.entries.includes(volume)) {
      out.notes.push(`${id}: ${volume} is still in ${poolSpec.path} (reconcile made it; pool ${pool} is being defined again): the next apply finds it`);
      continue;
    }
    if (!obs) {
      if (LUN_POOLS.includes(poolSpec.type) && poolDeps.length) {
        out.notes.push(`${id}: the LUNs of pools.${pool} are known once the pool is started; the next apply checks for ${volume}`);
        continue;
      }
      if (LUN_POOLS.includes(poolSpec.type)) {
        const have = poolObs?.volumes ? [...poolObs.volumes.keys()] : [];
        refuse(
          id,
          `${spec.origin}: ${pool} is ${article(poolSpec.type)} pool, whose volumes are the target's LUNs; there is no volume ${volume}${have.length ? ` (it has: ${have.join(', ')})` : ''}`,
        );
        continue;
      }
      const b = build();
      if (!b) continue;
      out.actions.push({
        id,
        resource: 'volume',
        kind: 'create',
        code: 'new',
        reason: `new volume ${volume} in pool ${pool} (${spec.format}, ${seed ? 'cloud-init seed' : formatSize(b.build.capacity)})`,
        changes: created({
          ...(fileBased ? imageOptions(spec) : { format: spec.format }),
          capacity: seed ? 'as its files make it' : formatSize(b.build.capacity),
          wipe: spec.wipe,
          source: b.build.backing
            ? `overlay on ${b.build.backing.path}`
            : b.build.source.kind === 'seed'
              ? 'cloud-init seed'
              : b.build.source.kind === 'blank'
                ? 'blank'
                : b.build.source.kind === 'volume'
                  ? `copy of ${b.build.source.pool}/${b.build.source.name}`
                  : `copy of ${b.build.source.path}`,
          ...(fileBased
            ? { owner: spec.permissions?.owner, group: spec.permissions?.group, mode: spec.permissions?.mode !== undefined ? octal(spec.permissions.mode) : undefined }
            : {}),
        }),
        destructive: false,
        dependsOn: b.dependsOn,
        op: {
          type: 'volume.create',
          build: b.build,
          recorded: recordedOptions(spec),
          imageName: spec.name,
          expectedPath: fileBased ? pathOf(spec) : undefined,
          wipe: spec.wipe,
        },
      });
      continue;
    }

    // libvirt follows a symlink in a file pool (vol-resize grows its target, wherever it is).
    if (obs.symlink !== undefined && !spec.followSymlink) {
      refuse(
        id,
        `${spec.origin}: volume ${volume} in pool ${pool} is a symlink to ${obs.symlink}; reconcile does not follow links (one can point at any file). If its target is this volume, declare followSymlink: true (with adopt: true)`,
      );
      continue;
    }
    // A volume reconcile did not create is managed only when the YAML adopts it (a LUN can
    // only ever be adopted: declaring it is adopting it).
    if (!ours && !spec.adopt && !LUN_POOLS.includes(poolSpec.type)) {
      const interrupted = record?.status === 'building' && record.key === '';
      refuse(
        id,
        interrupted
          ? `${spec.origin}: volume ${volume} in pool ${pool} exists, and an apply was killed while creating it: it may be that half-made volume or someone else's, so it is left alone. Delete it (virsh vol-delete --pool ${pool} ${volume}) to have it built again, or add adopt: true to images.${spec.name}`
          : `${spec.origin}: volume ${volume} in pool ${pool} exists and reconcile did not create it, so it is left alone. To manage it, add adopt: true to images.${spec.name} (an adopted volume is never deleted); otherwise declare another volume name${elsewhere}`,
      );
      continue;
    }
    const rebuild: Change[] = [];
    if (ours && record.status === 'building') rebuild.push({ field: 'state', from: 'incomplete (an apply was interrupted)', to: 'complete' });
    if (fileBased && obs.format && obs.format !== VOL_FORMAT[spec.format]) {
      rebuild.push({ field: 'format', from: formatOfDriver(obs.format), to: spec.format });
    }
    if (spec.source.kind === 'backing') {
      const dep = 'image' in spec.source ? state.images[spec.source.image] : undefined;
      const want = dep ? pathOf(dep) : (spec.source as { path: string }).path;
      if (want && obs.backing !== want) rebuild.push({ field: 'backing', from: obs.backing ?? 'none', to: want });
    }
    const q = spec.qcow2;
    if (spec.format === 'qcow2' && fileBased && q && (q.clusterSize !== undefined || q.lazyRefcounts !== undefined || q.compat !== undefined) && obs.format === 'qcow2') {
      // libvirt's volume XML does not report these; qemu-img does (cached by file stat).
      if (!files.has(obs.path)) {
        refuse(id, `${spec.origin}: ${unobserved(obs.path)}`);
        continue;
      }
      const f = fileAt(obs.path);
      if (f) {
        if (q.clusterSize !== undefined && f.clusterSize !== q.clusterSize)
          rebuild.push({ field: 'qcow2.clusterSize', from: f.clusterSize ? formatSize(f.clusterSize) : 'unset', to: formatSize(q.clusterSize) });
        if (q.lazyRefcounts !== undefined && f.qcow2?.lazyRefcounts !== q.lazyRefcounts)
          rebuild.push({ field: 'qcow2.lazyRefcounts', from: String(f.qcow2?.lazyRefcounts), to: String(q.lazyRefcounts) });
        if (q.compat !== undefined && f.qcow2?.compat !== q.compat) rebuild.push({ field: 'qcow2.compat', from: String(f.qcow2?.compat), to: q.compat });
      }
    }
    if (ours && record.status === 'ready') rebuild.push(...recordedChanges(spec, record.recorded, seedDigest));
    if (LUN_POOLS.includes(poolSpec.type) && spec.size !== undefined && obs.capacity < spec.size) {
      refuse(
        id,
        `${spec.origins.size ?? spec.origin}: ${volume} is a LUN of ${formatSize(obs.capacity)} on the iSCSI target; reconcile cannot grow it to ${formatSize(spec.size)}. Grow the LUN on the target`,
      );
      continue;
    }
    const mine = changeableBy(ours, spec.declared);
    const kept = keepAdopted(rebuild, mine, `volume ${volume}`, spec.name);
    if (kept) out.notes.push(`${id}: ${kept}`);
    const canGrow = RESIZABLE_POOLS.has(poolSpec.type) && (spec.format === 'qcow2' || spec.format === 'raw');
    const size = decideSize(spec.size, obs.capacity, sizeTolerance(spec.format, obs.format), canGrow, fileBased ? spec.format : `${article(poolSpec.type)} volume`);
    if (size.kind === 'shrink') {
      refuse(
        id,
        `${spec.origins.size ?? spec.origin}: size ${formatSize(spec.size!)} is smaller than volume ${volume} in pool ${pool} (${formatSize(size.from)}); shrinking destroys data and is refused. Declare at least ${formatSize(size.from)}`,
      );
      continue;
    }
    const update: Change[] = [];
    let grow: number | undefined;
    if (size.kind === 'rebuild' || (size.kind === 'grow' && rebuild.length)) rebuild.push(size.change);
    else if (size.kind === 'grow') {
      update.push(size.change);
      grow = spec.size;
    }
    const perm =
      fileBased && mine('permissions') ? permissionChanges(spec.permissions, { uid: obs.permissions?.owner, gid: obs.permissions?.group, mode: obs.permissions?.mode }) : [];

    if (rebuild.length) {
      const incomplete = ours && record.status === 'building';
      const derived = ours && seedContentOnly(rebuild);
      const refused = replaceRefusal({
        origin: spec.origin,
        what: `volume ${volume} in pool ${pool}`,
        rebuild,
        protect: spec.protect && !derived,
        allowReplace: input.allowReplace || derived,
        incomplete,
        overlays: input.overlaysOf(obs.path).filter((o) => o !== id),
      });
      if (refused) {
        refuse(id, refused);
        continue;
      }
      const b = build();
      if (!b) continue;
      out.actions.push({
        id,
        resource: 'volume',
        kind: 'replace',
        code: incomplete ? 'interrupted' : 'rebuild',
        reason: derived ? 'cloud-init seed files changed (rebuilt from them; it holds nothing else)' : reasonOf(rebuild),
        destructive: !incomplete && !derived,
        changes: rebuild,
        dependsOn: b.dependsOn,
        op: {
          type: 'volume.replace',
          build: b.build,
          recorded: recordedOptions(spec),
          imageName: spec.name,
          incomplete: incomplete ? { path: obs.path, birth: record.birth ?? obs.birth } : undefined,
          // As for a create: the intent names the path, or a second kill could never be matched to its volume.
          expectedPath: fileBased ? pathOf(spec) : undefined,
          wipe: spec.wipe,
          // The data being replaced goes the way its record says (an interrupted build holds none yet).
          wipeOld: ours && !incomplete ? record.wipe : undefined,
          old: ours && !incomplete && record.wipe ? { path: obs.path, birth: record.birth } : undefined,
        },
      });
      continue;
    }
    const wipe = ours ? wipeChange(record.wipe, spec.wipe) : undefined;
    const changes = [...update, ...perm, ...(wipe ? [wipe.change] : [])];
    if (changes.length) {
      const allocate = spec.qcow2?.preallocation === 'falloc' || spec.qcow2?.preallocation === 'full';
      out.actions.push({
        id,
        resource: 'volume',
        kind: 'update',
        code: 'drift',
        reason: reasonOf(changes),
        destructive: false,
        changes,
        dependsOn: [],
        op: {
          type: 'volume.update',
          pool,
          name: volume,
          resize: grow !== undefined ? { capacity: grow, allocate } : undefined,
          chmod: perm.length ? { path: obs.path, permissions: spec.permissions! } : undefined,
          wipe: wipe?.set,
          inventoryKey: wipe ? recordKey({ type: 'volume', pool, volume }) : undefined,
        },
      });
    } else {
      out.actions.push(inSync('volume', id, ours));
    }
  }

  for (const [k, rec] of input.orphans) {
    if (rec.type !== 'volume') continue;
    const id = orphanId(k);
    const found = volumes.get(volumeKey(rec.pool, rec.volume));
    if (found === undefined) continue;
    const obs = found.exists ? found : null;
    if (!input.prune) {
      out.notes.push(`volume ${rec.volume} in pool ${rec.pool} (was images.${rec.name}) left the YAML; \`apply --prune\` deletes it`);
      continue;
    }
    // A pool that is not running lists no volumes: its volume is unseen, not gone (forgetting
    // it would leave its file behind for good, and let the pool be undefined around it).
    const poolNow = input.pools.get(rec.pool);
    if (!obs && poolNow?.exists && !poolNow.active) {
      refuse(
        id,
        `volume ${rec.volume} in pool ${rec.pool} (was images.${rec.name}) left the YAML, but pool ${rec.pool} is not running, so the volume cannot be seen; start the pool (virsh pool-start ${rec.pool}) and prune again`,
      );
      continue;
    }
    const forget = !obs || !volumeIsOurs(rec, obs);
    const overlays = !forget ? input.overlaysOf(obs.path) : [];
    if (overlays.length) {
      refuse(id, `volume ${rec.volume} in pool ${rec.pool} (was images.${rec.name}) left the YAML, but ${overlays.join(', ')} still use it as backing file; it is not pruned`);
      continue;
    }
    const use = forget ? { blocking: [], after: [] } : input.diskUse(volumeKey(rec.pool, rec.volume), obs?.path);
    if (use.unknown) {
      refuse(
        id,
        `volume ${rec.volume} in pool ${rec.pool} (was images.${rec.name}) left the YAML, but reconcile cannot tell whether a domain uses it as a disk (${use.unknown}); it is not deleted blind`,
      );
      continue;
    }
    if (use.blocking.length) {
      refuse(
        id,
        `volume ${rec.volume} in pool ${rec.pool} (was images.${rec.name}) left the YAML, but domain ${use.blocking.join(', ')} still ${use.blocking.length > 1 ? 'have' : 'has'} it as a disk; it is not deleted under a domain (detach it, or undefine the domain, first)`,
      );
      continue;
    }
    out.actions.push({
      id,
      resource: 'volume',
      kind: 'delete',
      code: !obs ? 'gone' : forget ? 'not-ours' : 'left-yaml',
      destructive: !forget,
      changes: [],
      dependsOn: use.after,
      reason: !obs
        ? 'already gone; forgotten from the inventory'
        : forget
          ? 'replaced by a volume reconcile did not create: forgotten, not deleted'
          : `images.${rec.name} left the YAML (${formatSize(obs.capacity)} ${obs.format ?? 'volume'})${rec.wipe ? `; wiped (vol-wipe ${rec.wipe}) before it is deleted` : ''}`,
      op: { type: 'volume.delete', pool: rec.pool, name: rec.volume, exists: !forget, inventoryKey: k, path: rec.path, birth: rec.birth, wipe: forget ? undefined : rec.wipe },
    });
  }
  return out;
}

function driverName(format: ImageSpec['format']): string {
  return VOL_FORMAT[format];
}
