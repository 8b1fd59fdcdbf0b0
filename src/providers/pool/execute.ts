// Carries out pool actions through virsh: define/build/start, redefine and start/stop in
// place, and undefine (a dir pool's directory removed only if empty: libvirt's rmdir).
import { randomUUID } from 'node:crypto';
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
  readPool,
  setAutostart,
  startPool,
  stopPool,
  undefinePool,
} from '../../tools/libvirt-pool.js';
import { setPermissions } from '../common/files.js';
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
      if (op.adopted) {
        // An adopted pool stays adopted: replaced as the YAML and --allow-replace say, never
        // recorded as reconcile's (so never undefined by prune or destroy).
        await definePool(v, op.name, op.definition).catch(putBack);
        if (op.active) {
          await buildPool(v, op.name, op.definition.type);
          await startPool(v, op.name, op.definition.type);
        }
        await setAutostart(v, op.name, op.autostart);
        return undefined;
      }
      // Being created, recorded before libvirt knows the pool, with the uuid it will have
      // (chosen here): a pool found under this name and uuid after a kill -9 is the one being made.
      const key = recordKey({ type: 'pool', name: op.name });
      const createdAt = new Date().toISOString();
      const before = ctx.inventory.get(key);
      const uuid = randomUUID();
      await ctx.inventory.set(key, { type: 'pool', name: op.name, uuid, status: 'building', createdAt, uri: v.uri });
      const rec: PoolRecord = { type: 'pool', name: op.name, uuid, status: 'ready', createdAt, uri: v.uri };
      if (op.definition.type === 'dir') {
        // Defined, built, started and autostart set by one process (see createDirPool).
        const made = await createDirPool(v, op.name, op.definition, uuid, op);
        if (!made.defined) {
          if (before) await ctx.inventory.set(key, before);
          else await ctx.inventory.forget(key);
          await putBack(new Error(made.error));
        }
        failpoint('pool-defined');
        await ctx.inventory.set(key, rec);
        if (made.error) throw new Error(made.error);
        return { record: [key, rec] };
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
      if (op.active) {
        await buildPool(v, op.name, op.definition.type);
        await startPool(v, op.name, op.definition.type);
      }
      await setAutostart(v, op.name, op.autostart);
      return { record: [key, rec] };
    }
    case 'pool.update': {
      if (op.permissions) {
        // Libvirt's own definition with only the declared fields changed: whatever else it holds
        // (a security label, features reconcile does not model) stays.
        await stillThePool(ctx, op.name, op.uuid);
        await definePoolXml(v, withTargetPermissions(await poolDefinitionXml(v, op.name), op.permissions));
      }
      if (op.chmod) await setPermissions(op.chmod.path, op.chmod.permissions);
      if (op.start) {
        const type = (await readPool(v, op.name)).definition.type;
        await buildPool(v, op.name, type);
        await startPool(v, op.name, type);
      }
      if (op.stop) await stopPool(v, op.name);
      if (op.autostart !== undefined) await setAutostart(v, op.name, op.autostart);
      return undefined;
    }
    case 'pool.delete': {
      if (op.exists) {
        // Defined again by someone else since the plan (while a prompt waited, say): not ours.
        const swapped = await swappedSince(ctx, op.name, op.uuid);
        if (swapped) {
          ctx.log(`${a.id}: not deleted: ${swapped}; forgotten`);
          return { forget: op.inventoryKey };
        }
        if (op.active) await stopPool(v, op.name);
        // Only a dir pool's storage is removed, and libvirt does that with rmdir: a
        // directory still holding anything stays.
        if (op.poolType === 'dir') {
          await deletePoolStorage(v, op.name).catch((e: unknown) => ctx.log(`${a.id}: kept its directory (${libvirtMessage(e)})`));
        }
        await undefinePool(v, op.name);
      }
      return { forget: op.inventoryKey };
    }
  }
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
