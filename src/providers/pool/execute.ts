// Carries out pool actions through virsh: define/build/start, redefine and start/stop in
// place, and undefine (a dir pool's directory removed only if empty: libvirt's rmdir).
import { randomUUID } from 'node:crypto';
import { failpoint } from '../../failpoint.js';
import { recordKey, type PoolRecord } from '../../reconcile/inventory.js';
import type { Effect, ExecContext } from '../../reconcile/kind.js';
import type { Action } from '../../reconcile/plan.js';
import { buildPool, definePool, deletePoolStorage, ensureSecret, libvirtMessage, readPool, setAutostart, startPool, stopPool, undefinePool } from '../../tools/libvirt-pool.js';
import { setPermissions } from '../common/files.js';
import type { PoolOp } from './ops.js';

export async function executePool(a: Action, ctx: ExecContext): Promise<Effect> {
  const op = a.op as PoolOp;
  const v = ctx.virsh();
  switch (op.type) {
    case 'pool.create':
    case 'pool.replace': {
      if (op.type === 'pool.replace') {
        await stillThePool(ctx, op.name, op.uuid);
        // The old definition goes; its storage (files, LVs, device contents) stays untouched.
        if (op.wasActive) await stopPool(v, op.name);
        await undefinePool(v, op.name);
      }
      if (op.secret) await ensureSecret(v, op.secret.usage, op.secret.type, op.secret.file);
      // Being created, recorded before libvirt knows the pool, with the uuid it will have
      // (chosen here): a pool found under this name and uuid after a kill -9 is the one being made.
      const key = recordKey({ type: 'pool', name: op.name });
      const createdAt = new Date().toISOString();
      const before = ctx.inventory.get(key);
      const uuid = randomUUID();
      await ctx.inventory.set(key, { type: 'pool', name: op.name, uuid, status: 'building', createdAt, uri: v.uri });
      try {
        await definePool(v, op.name, op.definition, uuid);
      } catch (e) {
        // Nothing was defined (the name may be someone else's by now): the intent goes.
        if (before) await ctx.inventory.set(key, before);
        else await ctx.inventory.forget(key);
        throw e;
      }
      failpoint('pool-defined');
      const rec: PoolRecord = { type: 'pool', name: op.name, uuid, status: 'ready', createdAt, uri: v.uri };
      await ctx.inventory.set(key, rec);
      if (op.active) {
        await buildPool(v, op.name, op.definition.type);
        await startPool(v, op.name, op.definition.type);
      }
      await setAutostart(v, op.name, op.autostart);
      return { record: [key, rec] };
    }
    case 'pool.update': {
      if (op.redefine) await definePool(v, op.name, op.redefine, op.uuid);
      if (op.chmod) await setPermissions(op.chmod.path, op.chmod.permissions);
      if (op.start) {
        const type = (op.redefine ?? (await readPool(v, op.name)).definition).type;
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
        const now = (await readPool(v, op.name).catch(() => undefined))?.uuid;
        if (now !== op.uuid) {
          ctx.log(`${a.id}: not deleted: the pool named ${op.name} is no longer the one the plan saw (${now ? 'another uuid' : 'gone'}); forgotten`);
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

/** Throws unless the pool named is still the one the plan saw. */
async function stillThePool(ctx: ExecContext, name: string, uuid: string | undefined): Promise<void> {
  const now = (await readPool(ctx.virsh(), name).catch(() => undefined))?.uuid;
  if (now !== uuid) throw new Error(`the pool named ${name} is no longer the one the plan saw (${now ? 'another uuid' : 'gone'}); nothing changed`);
}
