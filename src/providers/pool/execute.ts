// Carries out pool actions through virsh: define/build/start, redefine and start/stop in
// place, and undefine (a dir pool's directory removed only if empty: libvirt's rmdir).
import { randomUUID } from 'node:crypto';
import { readdir, stat } from 'node:fs/promises';
import { printable } from '../../text.js';
import path from 'node:path';
import { filesystemOn, wipeSignatures } from '../../tools/blockdev.js';
import { isRemoteUri, type Virsh } from '../../tools/virsh.js';
import { failpoint } from '../../failpoint.js';
import { recordKey, type PoolRecord } from '../../reconcile/inventory.js';
import type { Effect, ExecContext } from '../../reconcile/kind.js';
import type { Action } from '../../reconcile/plan.js';
import {
  buildPool,
  createDirPool,
  definePool,
  definePoolXml,
  poolDefinitionXml,
  withTargetPermissions,
  deletePoolStorage,
  ensureSecret,
  libvirtMessage,
  poolVolumes,
  probeDirectory,
  readPool,
  setAutostart,
  startPool,
  stopPool,
  undefinePool,
} from '../../tools/libvirt-pool.js';
import { DIRECTORY_POOLS, type PoolType } from '../../reconcile/model.js';
import { birthOf, setPermissions, whatIsAt } from '../common/files.js';
import type { PoolOp } from './ops.js';

export async function executePool(a: Action, ctx: ExecContext): Promise<Effect> {
  const op = a.op as PoolOp;
  const v = ctx.virsh();
  switch (op.type) {
    case 'pool.create':
    case 'pool.replace': {
      let old: string | undefined;
      if (op.type === 'pool.replace') {
        await stillThePool(ctx, op.name, op.uuid);
        // The old definition goes; its storage (files, LVs, device contents) stays untouched.
        // Kept as libvirt had it: if the new one cannot be defined, the old one is put back.
        old = await poolDefinitionXml(v, op.name);
        if (op.wasActive) await stopPool(v, op.name);
        await undefinePool(v, op.name);
      }
      const putBack = async (e: unknown): Promise<never> => {
        if (old !== undefined) {
          await definePoolXml(v, old);
          if (op.type === 'pool.replace' && op.wasActive) await startPool(v, op.name).catch(() => undefined);
          throw new Error(`${(e as Error).message}; the previous definition of pool ${op.name} is back in place`);
        }
        throw e;
      };
      if (op.secret) await ensureSecret(v, op.secret.usage, op.secret.type, op.secret.file).catch(putBack);
      // What is at the target now (the plan may be minutes old): a directory that was not
      // there then is the user's as much as one that was.
      const here = await targetHere(op, v);
      if (here.refusal) await putBack(new Error(here.refusal));
      const build = op.build && !(here.found && op.definition.type === 'dir' && !op.adoptTarget);
      if (op.adopted) {
        // An adopted pool stays adopted: replaced as the YAML and --allow-replace say, never
        // recorded as reconcile's (so never undefined by prune or destroy).
        await definePool(v, op.name, op.definition).catch(putBack);
        if (build) await buildPool(v, op.name, op.definition.type);
        if (op.active) await startPool(v, op.name, op.definition.type);
        await setAutostart(v, op.name, op.autostart);
        return undefined;
      }
      // Being created, recorded before libvirt knows the pool, with the uuid it will have
      // (chosen here): a pool found under this name and uuid after a kill -9 is the one being made.
      const key = recordKey({ type: 'pool', name: op.name });
      const createdAt = new Date().toISOString();
      const before = ctx.inventory.get(key);
      const uuid = randomUUID();
      const known = { path: op.definition.path, deleteStorage: op.deleteStorage };
      // Its storage is recorded as made only once built (a kill before that: unknown, never deleted).
      await ctx.inventory.set(key, { type: 'pool', name: op.name, uuid, status: 'building', createdAt, uri: v.uri, ...known });
      const rec: PoolRecord = { type: 'pool', name: op.name, uuid, status: 'ready', createdAt, uri: v.uri, ...known };
      // A directory pool's storage is its directory: made if it was not there (nothing there and
      // nothing built: not recorded yet, a later start builds and records it); logical and disk
      // pools' storage (a VG, a label) is made if pool-build built it.
      // Defined again (undefined by hand) over the very directory reconcile made for it: still made.
      const remade =
        before?.type === 'pool' &&
        before.storage === 'made' &&
        !!before.storageBirth &&
        before.path === op.definition.path &&
        here.found &&
        (await localBirth(v, op.definition.path!)) === before.storageBirth;
      const dirStorage = here.checked ? (remade ? 'made' : here.found ? 'found' : build ? 'made' : undefined) : undefined;
      const storageOf = async (kind: PoolRecord['storage']): Promise<Partial<PoolRecord>> =>
        kind === 'made' && here.checked ? { storage: kind, storageBirth: await localBirth(v, op.definition.path!) } : kind ? { storage: kind } : {};
      if (op.definition.type === 'dir') {
        // Defined, built, started and autostart set by one process (see createDirPool).
        const made = await createDirPool(v, op.name, op.definition, uuid, { ...op, build });
        if (!made.defined) {
          if (before) await ctx.inventory.set(key, before);
          else await ctx.inventory.forget(key);
          await putBack(new Error(made.error));
        }
        failpoint('pool-defined');
        const done: PoolRecord = { ...rec, ...(made.error && build ? {} : await storageOf(dirStorage)) };
        await ctx.inventory.set(key, done);
        if (made.error) throw new Error(made.error);
        return { record: [key, done] };
      }
      try {
        await definePool(v, op.name, op.definition, uuid);
      } catch (e) {
        // Nothing was defined (the name may be someone else's by now): the intent goes.
        if (before) await ctx.inventory.set(key, before);
        else await ctx.inventory.forget(key);
        await putBack(e);
      }
      failpoint('pool-defined');
      await ctx.inventory.set(key, rec);
      const filesystem = build && op.definition.type === 'fs' ? await buildFs(v, op.name, op.definition.source.device) : undefined;
      const built = build && op.definition.type !== 'fs' ? await buildPool(v, op.name, op.definition.type) : false;
      const done: PoolRecord = { ...rec, ...(await storageOf(here.checked ? dirStorage : built ? 'made' : 'found')), ...(filesystem ? { filesystem } : {}) };
      await ctx.inventory.set(key, done);
      if (op.active) await startPool(v, op.name, op.definition.type);
      await setAutostart(v, op.name, op.autostart);
      return { record: [key, done] };
    }
    case 'pool.update': {
      if (op.permissions) {
        // Libvirt's own definition with only the declared fields changed: whatever else it holds
        // (a security label, features reconcile does not model) stays.
        await stillThePool(ctx, op.name, op.uuid);
        await definePoolXml(v, withTargetPermissions(await poolDefinitionXml(v, op.name), op.permissions));
      }
      if (op.chmod) await setPermissions(op.chmod.path, op.chmod.permissions);
      const key = recordKey({ type: 'pool', name: op.name });
      let rec = ctx.inventory.get(key);
      if (op.start) {
        const { type, path: target } = (await readPool(v, op.name)).definition;
        // Plans saved by earlier versions carry no build: they always built.
        if (op.build ?? true) {
          // A directory this build makes is recorded as made (a pool defined without one, say).
          const remote = isRemoteUri(v.uri);
          const missing =
            target && DIRECTORY_POOLS.includes(type) ? (remote ? (await probeDirectory(v, target)).kind === 'missing' : (await birthOf(target)) === undefined) : false;
          let filesystem: PoolRecord['filesystem'];
          if (type === 'fs') filesystem = await buildFs(v, op.name, (await readPool(v, op.name)).definition.source.device);
          else await buildPool(v, op.name, type);
          if (filesystem && rec?.type === 'pool' && !rec.filesystem) {
            rec = { ...rec, filesystem };
            await ctx.inventory.set(key, rec);
          }
          // (On another host there is no birth time to read: made, without one.)
          const birth = missing ? await localBirth(v, target!) : undefined;
          if ((birth || (missing && remote)) && rec?.type === 'pool' && rec.storage === undefined) {
            rec = { ...rec, storage: 'made', ...(birth ? { storageBirth: birth } : {}), path: target };
            await ctx.inventory.set(key, rec);
          }
        }
        await startPool(v, op.name, type);
      }
      if (op.stop) await stopPool(v, op.name);
      if (op.autostart !== undefined) await setAutostart(v, op.name, op.autostart);
      if (op.deleteStorage !== undefined && rec?.type === 'pool') return { record: [key, { ...rec, deleteStorage: op.deleteStorage }] };
      return rec?.type === 'pool' ? { record: [key, rec] } : undefined;
    }
    case 'pool.delete': {
      if (op.exists) {
        // Defined again by someone else since the plan (while a prompt waited, say): not ours.
        const swapped = await swappedSince(ctx, op.name, op.uuid);
        if (swapped) {
          ctx.log(`${a.id}: not deleted: ${swapped}; forgotten`);
          return { forget: op.inventoryKey };
        }
        // Its storage only as the plan said (declared, made by reconcile, empty), and only if it
        // is still empty now: for dir, fs and netfs pools libvirt's rmdir guarantees it; logical
        // and disk pools are listed again first (their pool-delete takes whatever is there).
        let deleteStorage = op.deleteStorage ?? false;
        if (deleteStorage && op.active && !DIRECTORY_POOLS.includes(op.poolType as PoolType)) {
          const held = await poolVolumes(v, op.name);
          if (held.length) {
            ctx.log(`${a.id}: kept its storage: it holds ${held.join(', ')} now`);
            deleteStorage = false;
          }
        }
        // The filesystem reconcile made goes only if nothing is in it but an empty lost+found
        // (fsck puts what it recovers there), checked while it is still mounted.
        let filesystem = op.active ? op.filesystem : undefined;
        if (filesystem && op.target) {
          // Read directly, not from libvirt's list (it leaves out names it cannot put in XML, such
          // as those with control characters), and only where the filesystem is seen mounted.
          const held = await filesystemContent(op.target, filesystem.device);
          if (held !== undefined) {
            ctx.log(`${a.id}: kept its filesystem: ${held}`);
            filesystem = undefined;
            deleteStorage = false;
          }
        }
        if (op.active) await stopPool(v, op.name);
        // Looked at once stopped: a mounted fs pool's directory shows its filesystem's root instead.
        if (deleteStorage && op.storage && (await localBirth(v, op.storage.path)) !== op.storage.birth) {
          ctx.log(`${a.id}: kept ${op.storage.path}: it is no longer the directory reconcile made`);
          deleteStorage = false;
        }
        if (deleteStorage) {
          try {
            await deletePoolStorage(v, op.name);
          } catch (e) {
            ctx.log(`${a.id}: kept its storage (${libvirtMessage(e)})`);
            filesystem = undefined;
          }
        }
        if (filesystem) await eraseFilesystem(a.id, filesystem, ctx);
        await undefinePool(v, op.name);
      }
      return { forget: op.inventoryKey };
    }
  }
}

/**
 * What keeps a mounted fs pool's filesystem: anything in it but an empty lost+found, or not
 * being able to see it mounted here (the target is not on the device). Undefined: empty.
 */
async function filesystemContent(target: string, device: string): Promise<string | undefined> {
  const [t, d] = await Promise.all([stat(target, { bigint: true }).catch(() => undefined), stat(device, { bigint: true }).catch(() => undefined)]);
  if (!t || !d || t.dev !== d.rdev) return `it is not seen mounted from ${device} at ${target}, so what it holds cannot be read`;
  const inside = (await readdir(target)).filter((n) => n !== 'lost+found');
  const lost = await readdir(path.join(target, 'lost+found')).catch(() => undefined);
  if (!lost) return 'its lost+found cannot be read';
  const all = [...inside.map(printable), ...lost.map((n) => `lost+found/${printable(n)}`)];
  return all.length ? `it holds ${all.slice(0, 5).join(', ')}${all.length > 5 ? ', …' : ''} now` : undefined;
}

/** Erases the signature of the filesystem reconcile made, if the device still holds that one (same UUID). */
async function eraseFilesystem(id: string, fs: { device: string; type: string; uuid: string }, ctx: ExecContext): Promise<void> {
  const now = await filesystemOn(fs.device).catch(() => undefined);
  if (!now || now.uuid !== fs.uuid) {
    ctx.log(`${id}: left ${fs.device} as it is: it no longer holds the ${fs.type} filesystem reconcile made`);
    return;
  }
  await wipeSignatures(fs.device);
}

/**
 * pool-build for an fs pool, telling whether it made the filesystem: there was none on the
 * device before and there is one now (--no-overwrite keeps one that was there).
 */
async function buildFs(v: Virsh, name: string, device: string | undefined): Promise<PoolRecord['filesystem']> {
  const before = device ? await filesystemOn(device) : undefined;
  await buildPool(v, name, 'fs');
  const after = !before && device ? await filesystemOn(device) : undefined;
  return after?.uuid && device ? { device, type: after.type, uuid: after.uuid } : undefined;
}

/** Why the pool named is no longer the one the plan saw (its uuid), or undefined if it still is. */
async function swappedSince(ctx: ExecContext, name: string, uuid: string | undefined): Promise<string | undefined> {
  const now = (await readPool(ctx.virsh(), name).catch(() => undefined))?.uuid;
  return now === uuid ? undefined : `the pool named ${name} is no longer the one the plan saw (${now ? 'another uuid' : 'gone'})`;
}

/** Throws unless the pool named is still the one the plan saw. */
async function stillThePool(ctx: ExecContext, name: string, uuid: string | undefined): Promise<void> {
  const swapped = await swappedSince(ctx, name, uuid);
  if (swapped) throw new Error(`${swapped}; nothing changed`);
}

/**
 * What is at a directory pool's target now. A directory the plan did not see is the user's all
 * the same; if permissions were declared for it without adopt, nothing is done.
 */
async function targetHere(op: Extract<PoolOp, { type: 'pool.create' | 'pool.replace' }>, v: Virsh): Promise<{ checked: boolean; found: boolean; refusal?: string }> {
  const p = op.definition.path;
  if (!p || !DIRECTORY_POOLS.includes(op.definition.type)) return { checked: false, found: false };
  // A dangling symlink counts as something there: not a directory to build over. On another
  // host, libvirt there is asked.
  const found = isRemoteUri(v.uri) ? (await probeDirectory(v, p)).kind !== 'missing' : (await whatIsAt(p)) !== 'missing';
  if (found && !op.targetFound && op.definition.permissions && !op.adoptTarget) {
    return { checked: true, found, refusal: `${p} appeared since the plan and reconcile did not make it; its owner and mode are not changed, and pool ${op.name} is not defined` };
  }
  return { checked: true, found };
}

/** A pool directory's birth time, for telling the one reconcile made from another later; none on another host. */
function localBirth(v: Virsh, p: string): Promise<string | undefined> {
  return isRemoteUri(v.uri) ? Promise.resolve(undefined) : birthOf(p);
}
