// Declared pools vs what libvirt reports: define/build/start new ones (never building over a
// directory that is already there), fix autostart, activity and permissions in place, replace
// on a change of type, target or source (only with --allow-replace); prune undefines only
// pools reconcile defined, and deletes their storage only if declared, made by reconcile and empty.
import path from 'node:path';
import { definitionFor, secretUsageFor, type ObservedPool, type PoolDefinition } from '../../tools/libvirt-pool.js';
import { created, octal, permissionChanges, reasonOf } from '../common/decisions.js';
import { recordKey, type Inventory, type InventoryRecord, type PoolRecord } from '../../reconcile/inventory.js';
import type { DirectoryContent, Observed } from '../observe.js';
import { DIRECTORY_POOLS, STORAGE_POOLS, type DesiredState, type PoolSpec } from '../../reconcile/model.js';
import type { PoolOp } from './ops.js';
import { inSync, orphanId, orphanKey, type NoOp, type Action, type Change, type Refusal } from '../../reconcile/plan.js';

export interface PoolDiff {
  actions: Action<PoolOp | NoOp>[];
  refusals: Refusal[];
  notes: string[];
}

const norm = (p?: string) => (p === undefined ? undefined : path.normalize(p).replace(/(.)\/+$/, '$1'));

/** Changes that libvirt cannot make to a defined pool: they need a replace. */
export function definitionChanges(want: PoolDefinition, have: PoolDefinition): Change[] {
  const ch: Change[] = [];
  const cmp = (field: string, w: unknown, h: unknown) => {
    if (w !== undefined && String(w) !== String(h ?? 'unset')) ch.push({ field, from: h === undefined ? 'unset' : String(h), to: String(w) });
  };
  cmp('type', want.type, have.type);
  if (want.type !== 'iscsi-direct' && want.type !== 'rbd') cmp('path', norm(want.path), norm(have.path));
  const hosts = (hs: PoolDefinition['source']['hosts'], withPorts: boolean) => hs.map((h) => (withPorts && h.port ? `${h.name}:${h.port}` : h.name)).join(',');
  if (want.source.hosts.length) {
    const withPorts = want.source.hosts.some((h) => h.port !== undefined);
    cmp('source.host', hosts(want.source.hosts, withPorts), hosts(have.source.hosts, withPorts) || undefined);
  }
  cmp('source.dir', norm(want.source.dir), norm(have.source.dir));
  cmp('source.format', want.source.format, have.source.format);
  cmp('source.device', want.source.device, have.source.device);
  cmp('source.name', want.source.name, have.source.name);
  cmp('source.initiator', want.source.initiator, have.source.initiator);
  cmp('source.auth.username', want.source.auth?.username, have.source.auth?.username);
  // Which secret: by usage (a pool defined by hand may name it by uuid, which is not compared).
  if (!/^[0-9a-f]{8}-/.test(have.source.auth?.secretUsage ?? '')) cmp('source.auth.secret', want.source.auth?.secretUsage, have.source.auth?.secretUsage);
  return ch;
}

/** The libvirt secret a pool's auth makes for itself from secretFile (one declared under secrets: is its own object). */
function secretFor(spec: PoolSpec) {
  const a = spec.source.auth;
  return a?.secretFile ? { usage: secretUsageFor(spec.name), type: a.type, file: a.secretFile } : undefined;
}

/** A pool is defined, started or changed after the declared secret its auth names (its value may be set in the same apply). */
const secretDeps = (spec: PoolSpec) => (spec.source.auth?.secret ? [`secrets.${spec.source.auth.secret}`] : []);

export function diffPools(input: {
  state: DesiredState;
  pools: Map<string, Observed<ObservedPool>>;
  /** what is at the targets of pools not yet reconcile's, and of pools whose storage may go */
  directories: Map<string, DirectoryContent>;
  inventory: Inventory;
  allowReplace: boolean;
  prune: boolean;
  /** actions planned before this diff: a pool holding only volumes this plan deletes may go too */
  earlier: Action[];
  /** pool records the YAML no longer declares (inventory minus desired) */
  orphans: [string, InventoryRecord][];
}): PoolDiff {
  const out: PoolDiff = { actions: [], refusals: [], notes: [] };
  const { state, pools, inventory } = input;
  for (const spec of Object.values(state.pools).sort((a, b) => a.name.localeCompare(b.name))) {
    const id = `pools.${spec.name}`;
    const want = definitionFor(spec, input.state.secrets);
    const found = pools.get(spec.name);
    if (found === undefined) continue; // not observed: libvirt said why, and the plan fails with it
    // A directory already at the target of a pool being defined is the user's: used as it is,
    // never built over (libvirt's pool-build would chown and chmod it) and never deleted.
    // Its refusal, or whether it is there and what the op that defines the pool carries about it.
    const target = () => {
      const at = spec.path && DIRECTORY_POOLS.includes(spec.type) ? input.directories.get(spec.path) : undefined;
      if (at?.kind === 'unreadable' || at?.kind === 'other') {
        return { refusal: `${spec.origin}: ${at.kind === 'other' ? `${spec.path} exists and is not a directory` : at.why}; the pool is not defined` };
      }
      const existing = at?.kind === 'directory';
      if (existing && spec.permissions && !spec.adopt) {
        return {
          refusal: `${spec.origin}: ${spec.path} exists and reconcile did not make it; the declared permissions would change its owner and mode. Add adopt: true to pools.${spec.name} to have them set on it, or leave permissions out to use it as it is`,
        };
      }
      const op = {
        build: spec.build && !(existing && spec.type === 'dir' && !spec.adopt),
        deleteStorage: spec.deleteStorage,
        ...(existing ? { targetFound: true } : {}),
        ...(spec.adopt ? { adoptTarget: true } : {}),
      };
      return { existing, op };
    };
    if (!found.exists) {
      const t = target();
      if (t.refusal !== undefined) {
        out.refusals.push({ id, message: t.refusal });
        continue;
      }
      out.actions.push({
        id,
        resource: 'pool',
        kind: 'create',
        code: 'new',
        destructive: false,
        dependsOn: secretDeps(spec),
        changes: created({
          type: spec.type,
          path: want.path,
          'source.host': want.source.hosts.map((h) => (h.port ? `${h.name}:${h.port}` : h.name)).join(','),
          'source.dir': want.source.dir,
          'source.device': want.source.device,
          'source.name': want.source.name,
          'source.format': want.source.format,
          'source.auth.username': want.source.auth?.username,
          active: spec.active,
          autostart: spec.autostart,
          mode: spec.permissions?.mode !== undefined ? octal(spec.permissions.mode) : undefined,
        }),
        reason: `new ${spec.type} pool${want.path ? ` at ${want.path}` : ''}${t.existing ? ` (a directory that is there already: used as it is, never deleted)` : ''}${t.op.build ? ', built' : ''}${spec.active ? ', started' : ''}${spec.autostart ? ', autostart' : ''}`,
        op: { type: 'pool.create', name: spec.name, definition: want, active: spec.active, autostart: spec.autostart, secret: secretFor(spec), ...t.op },
      });
      continue;
    }
    const obs = found;
    const rec = inventory.objects[recordKey({ type: 'pool', name: spec.name })];
    // Recorded as being defined (a kill -9 between the define and the record): the pool is
    // the one being made only if it has the uuid reconcile chose for it; otherwise someone
    // else defined one under the name, and it is never reconcile's (never pruned).
    if (rec?.type === 'pool' && rec.status === 'building' && rec.uuid !== obs.uuid)
      out.notes.push(
        `${id}: an apply was killed while defining it, and the pool under this name is not the one it was making (another uuid); it is not reconcile's and will never be pruned`,
      );
    const ours = rec?.type === 'pool' && (rec.status !== 'building' || rec.uuid === obs.uuid);
    // A pool reconcile did not define is managed only when the YAML adopts it.
    if (!ours && !spec.adopt) {
      out.refusals.push({
        id,
        message: `${spec.origin}: pool ${spec.name} exists and reconcile did not define it, so it is left alone. To manage it, add adopt: true to pools.${spec.name} (an adopted pool is changed only in what its own declaration sets, and never undefined); otherwise declare another pool name`,
      });
      continue;
    }
    // Of an adopted pool, only what its declaration sets: not the defaults of autostart and
    // active, nor the target path or source name libvirt would default to ("source.auth.username"
    // is declared by source.auth).
    const mine = (field: string) => ours || spec.declared.some((d) => d !== 'source' && (field === d || field.startsWith(`${d}.`)));
    const rebuild = definitionChanges(want, obs.definition).filter((c) => mine(c.field));
    if (rebuild.length) {
      const vols = obs.volumes ? [...obs.volumes.keys()] : [];
      if (!input.allowReplace) {
        out.refusals.push({
          id,
          message: `${spec.origin}: pool ${spec.name} must be redefined (${reasonOf(rebuild)}); libvirt cannot change this in place. Re-run with --allow-replace to replace it${vols.length ? ` (its ${vols.length} volume(s) stay where they are but will not be in the new pool)` : ''}`,
        });
        continue;
      }
      const t = target();
      if (t.refusal !== undefined) {
        out.refusals.push({ id, message: t.refusal });
        continue;
      }
      out.actions.push({
        id,
        resource: 'pool',
        kind: 'replace',
        code: 'rebuild',
        reason: reasonOf(rebuild),
        destructive: vols.length > 0,
        changes: rebuild,
        dependsOn: secretDeps(spec),
        op: {
          type: 'pool.replace',
          name: spec.name,
          definition: want,
          active: mine('active') ? spec.active : obs.active,
          autostart: mine('autostart') ? spec.autostart : obs.autostart,
          wasActive: obs.active,
          uuid: obs.uuid,
          secret: secretFor(spec),
          ...t.op,
          ...(ours ? {} : { adopted: true }),
        },
      });
      continue;
    }
    const changes: Change[] = [];
    const op: Extract<PoolOp, { type: 'pool.update' }> = { type: 'pool.update', name: spec.name };
    const perm = spec.permissions;
    const have = obs.definition.permissions;
    const permCh = want.path && spec.type !== 'iscsi-direct' && spec.type !== 'rbd' ? permissionChanges(perm, { uid: have?.owner, gid: have?.group, mode: have?.mode }) : [];
    // Storage found at the target (a directory of the user's) is not reconcile's to chmod (unless
    // adopted) nor to build over (ever).
    const storageFound = rec?.type === 'pool' && rec.storage === 'found';
    if (permCh.length && storageFound && !spec.adopt) {
      out.refusals.push({
        id,
        message: `${spec.origin}: ${want.path} was there before pool ${spec.name} and reconcile did not make it; changing permissions would change its owner and mode. Add adopt: true to pools.${spec.name} to have them set on it`,
      });
      continue;
    }
    if (ours && rec?.type === 'pool' && (rec.deleteStorage ?? false) !== spec.deleteStorage) {
      changes.push({ field: 'deleteStorage', from: String(rec.deleteStorage ?? false), to: String(spec.deleteStorage) });
      op.deleteStorage = spec.deleteStorage;
    }
    if (permCh.length) {
      changes.push(...permCh);
      op.permissions = perm;
      op.uuid = obs.uuid;
      if (spec.type === 'dir' || spec.type === 'fs' || spec.type === 'netfs') op.chmod = { path: want.path!, permissions: perm! };
    }
    if (mine('active') && spec.active && !obs.active) {
      changes.push({ field: 'state', from: 'inactive', to: 'active' });
      op.start = true;
      op.build = spec.build && !storageFound;
    } else if (mine('active') && !spec.active && obs.active) {
      changes.push({ field: 'state', from: 'active', to: 'inactive' });
      op.stop = true;
    }
    if (mine('autostart') && spec.autostart !== obs.autostart) {
      changes.push({ field: 'autostart', from: String(obs.autostart), to: String(spec.autostart) });
      op.autostart = spec.autostart;
    }
    if (changes.length) {
      out.actions.push({ id, resource: 'pool', kind: 'update', code: 'drift', reason: reasonOf(changes), destructive: false, changes, dependsOn: secretDeps(spec), op });
    } else {
      out.actions.push(inSync('pool', id, ours, ours ? 'in sync' : 'in sync (adopted: reconcile did not define it and never deletes it)'));
    }
  }

  // Volume records this plan prunes (by inventory key), and the volumes it deletes (not those it
  // only forgets) by pool.
  const handledVolumes = new Map<string, { pool: string; actionId: string }>();
  const prunedVolumes = new Set<string>();
  for (const a of input.earlier) {
    // A prune deletes the inventory record its id names; destructive: the volume itself goes.
    const rec = a.resource === 'volume' && a.kind === 'delete' ? inventory.objects[orphanKey(a.id)] : undefined;
    if (rec?.type !== 'volume') continue;
    handledVolumes.set(orphanKey(a.id), { pool: rec.pool, actionId: a.id });
    if (a.destructive) prunedVolumes.add(`${rec.pool}/${rec.volume}`);
  }
  for (const [key, rec] of input.orphans) {
    if (rec.type !== 'pool') continue;
    const id = orphanId(key);
    const found = pools.get(rec.name);
    if (found === undefined) continue;
    const obs = found.exists ? found : null;
    if (!input.prune) {
      out.notes.push(`pool ${rec.name} left the YAML; \`apply --prune\` undefines it`);
      continue;
    }
    const unfinished = rec.status === 'building' && rec.uuid !== obs?.uuid;
    if (obs === null || unfinished || (rec.uuid && obs.uuid && rec.uuid !== obs.uuid)) {
      out.actions.push({
        id,
        resource: 'pool',
        kind: 'delete',
        code: obs ? 'not-ours' : 'gone',
        reason: !obs
          ? 'already gone; forgotten from the inventory'
          : unfinished
            ? 'an apply was killed while defining it, and this pool is not the one it was making (another uuid): forgotten, not deleted'
            : 'redefined by someone else: forgotten, not deleted',
        destructive: false,
        changes: [],
        dependsOn: [],
        op: { type: 'pool.delete', name: rec.name, poolType: '', active: false, exists: false, inventoryKey: key },
      });
      continue;
    }
    // Volumes reconcile made in it that this plan neither deletes nor forgets (refused): the
    // pool stays, or they could never be found again.
    const stillOurs = Object.entries(inventory.objects)
      .filter(([k, r]) => r.type === 'volume' && r.pool === rec.name && !handledVolumes.has(k))
      .map(([, r]) => (r.type === 'volume' ? r.volume : ''));
    if (stillOurs.length) {
      out.refusals.push({
        id,
        message: `pool ${rec.name} left the YAML, but ${stillOurs.length} volume(s) reconcile made in it are not being pruned (${stillOurs.slice(0, 5).join(', ')}${stillOurs.length > 5 ? ', …' : ''}); it is not undefined`,
      });
      continue;
    }
    const storage = storageFate(rec, obs, input.directories, (v) => prunedVolumes.has(`${rec.name}/${v}`));
    const dependsOn = [...handledVolumes].filter(([, r]) => r.pool === rec.name).map(([, r]) => r.actionId);
    out.actions.push({
      id,
      resource: 'pool',
      kind: 'delete',
      code: 'left-yaml',
      reason: `pool ${rec.name} left the YAML (${obs.definition.type}${obs.definition.path ? ` at ${obs.definition.path}` : ''}): undefined; ${storage.delete ? `its storage deleted (deleteStorage: true, made by reconcile, empty${rec.filesystem && obs.definition.type === 'fs' ? `: the ${rec.filesystem.type} filesystem it made on ${rec.filesystem.device} erased${storage.keepDirectory ? ', the directory it was mounted on kept (reconcile did not make it)' : ''}` : ''})` : storage.why}`,
      // An undefine is a delete even when the storage stays (a forget is destructive: false).
      destructive: true,
      changes: [],
      dependsOn,
      op: {
        type: 'pool.delete',
        name: rec.name,
        uuid: obs.uuid,
        poolType: obs.definition.type,
        active: obs.active,
        exists: true,
        inventoryKey: key,
        ...(storage.delete && !storage.keepDirectory ? { deleteStorage: true } : {}),
        ...(storage.delete && rec.path && rec.storageBirth && !storage.keepDirectory ? { storage: { path: rec.path, birth: rec.storageBirth } } : {}),
        ...(storage.delete && rec.filesystem && obs.definition.type === 'fs' ? { filesystem: rec.filesystem, target: obs.definition.path } : {}),
      },
    });
  }
  return out;
}

/**
 * Whether a pruned pool's storage goes too: only if its declaration asked (deleteStorage,
 * recorded), reconcile made it, and nothing but volumes this plan deletes is in it — as libvirt
 * lists them, or, for an inactive pool, as its directory holds them. Otherwise why it stays.
 */
export function storageFate(
  rec: PoolRecord,
  obs: ObservedPool,
  directories: Map<string, DirectoryContent>,
  pruned: (volume: string) => boolean,
): { delete: true; keepDirectory?: true } | { delete: false; why: string } {
  if (!rec.deleteStorage) return { delete: false, why: 'its storage is kept (deleteStorage was not declared)' };
  if (!STORAGE_POOLS.includes(obs.definition.type)) return { delete: false, why: `its storage is kept (${obs.definition.type} pools have none here)` };
  // An fs pool's storage is the filesystem reconcile made on the device, whoever made the
  // directory it is mounted on (a directory found there is kept).
  const fsMade = obs.definition.type === 'fs' && !!rec.filesystem;
  if (rec.storage !== 'made' && !fsMade)
    return {
      delete: false,
      why:
        rec.storage === 'found'
          ? 'its storage is kept: it was there before the pool, reconcile did not make it'
          : 'its storage is kept: it is not recorded that reconcile made it (an older version defined this pool, or an apply was interrupted while making it)',
    };
  if (DIRECTORY_POOLS.includes(obs.definition.type) && !rec.storageBirth && !fsMade)
    return { delete: false, why: 'its storage is kept: the directory reconcile made was not recorded' };
  // Unmounted, the directory says nothing of what the filesystem holds.
  if (fsMade && !obs.volumes) return { delete: false, why: 'its storage is kept: the pool is inactive, so what its filesystem holds cannot be read (start it, then prune)' };
  const at = !obs.volumes && rec.path && DIRECTORY_POOLS.includes(obs.definition.type) ? directories.get(rec.path) : undefined;
  const held = obs.volumes ? [...obs.volumes.keys()] : at?.kind === 'directory' ? at.entries : at?.kind === 'missing' ? [] : undefined;
  if (held === undefined) return { delete: false, why: 'its storage is kept: the pool is inactive and what it holds cannot be read' };
  // A filesystem reconcile made comes with lost+found: part of it, not something it holds (the
  // apply checks that it is empty before the filesystem goes).
  const others = held.filter((v) => !pruned(v) && !(v === 'lost+found' && rec.filesystem && obs.definition.type === 'fs'));
  if (others.length)
    return {
      delete: false,
      why: `its storage is kept: it holds ${others.length} thing(s) reconcile is not deleting (${others.slice(0, 5).join(', ')}${others.length > 5 ? ', …' : ''})`,
    };
  return fsMade && (rec.storage !== 'made' || !rec.storageBirth) ? { delete: true, keepDirectory: true } : { delete: true };
}
