// Carries out domain actions through virsh: define a new domain (marked as reconcile's in
// its metadata), attach/update/detach disks, undefine a domain reconcile defined.
import { failpoint } from '../../failpoint.js';
import { recordKey, type DomainRecord } from '../../reconcile/inventory.js';
import type { Effect, ExecContext } from '../../reconcile/kind.js';
import type { Action } from '../../reconcile/plan.js';
import { randomUUID } from 'node:crypto';
import { changeDisk, defineDomain, domainExists, domainUuid, domainXml, setOwnership, undefineDomain } from '../../tools/libvirt-domain.js';
import type { Virsh } from '../../tools/virsh.js';
import type { DomainOp } from './ops.js';

export async function executeDomain(a: Action, ctx: ExecContext): Promise<Effect> {
  const op = a.op as DomainOp;
  const v = ctx.virsh();
  switch (op.type) {
    case 'domain.define': {
      // `virsh define` redefines a domain of the same name: one defined since the plan is not ours to overwrite.
      if (await domainExists(v, op.name)) throw new Error(`domain ${op.name} was defined by someone else since the plan; it is left as it is`);
      // Being created, recorded first with the uuid it will have (chosen here): a domain found
      // under this name and uuid after a kill -9 is the one being made.
      const key = recordKey({ type: 'domain', name: op.name });
      const createdAt = new Date().toISOString();
      const uuid = randomUUID();
      await ctx.inventory.set(key, { type: 'domain', name: op.name, uuid, status: 'building', createdAt, uri: v.uri });
      try {
        await defineDomain(v, domainXml({ ...op.definition, uuid }));
      } catch (e) {
        // Nothing was defined: the intent goes.
        await ctx.inventory.forget(key);
        throw e;
      }
      failpoint('domain-defined');
      const rec: DomainRecord = { type: 'domain', name: op.name, uuid, status: 'ready', createdAt, uri: v.uri };
      return { record: [key, rec] };
    }
    case 'domain.disks': {
      const swapped = await swappedSince(v, op.name, op.uuid);
      if (swapped) throw new Error(`${swapped}; nothing changed`);
      const pending: string[] = [];
      for (const step of op.steps) {
        const live = await changeDisk(v, op.name, step.verb, step.disk, op.running);
        if (!live) pending.push(`${step.verb.replace('-device', '')} ${step.disk.target}`);
      }
      await setOwnership(v, op.name, op.uuid, op.ownership, op.running);
      if (pending.length) ctx.log(`${a.id}: saved in the persistent definition; the running domain takes it at its next restart (${pending.join(', ')})`);
      if (!op.record) return undefined;
      const key = recordKey({ type: 'domain', name: op.name });
      const before = ctx.inventory.get(key);
      return {
        record: [key, { type: 'domain', name: op.name, uuid: op.uuid, status: 'ready', createdAt: before?.createdAt ?? new Date().toISOString(), uri: v.uri }],
      };
    }
    case 'domain.undefine': {
      if (op.exists) {
        // Defined again by someone else since the plan (while a prompt waited, say): not ours.
        const swapped = await swappedSince(v, op.name, op.uuid);
        if (swapped) {
          ctx.log(`${a.id}: not undefined: ${swapped}; forgotten`);
          return { forget: op.inventoryKey };
        }
        await undefineDomain(v, op.name);
      }
      return { forget: op.inventoryKey };
    }
  }
}

/** Why the domain named is no longer the one the plan saw (its uuid), or undefined if it still is. */
async function swappedSince(v: Virsh, name: string, uuid: string | undefined): Promise<string | undefined> {
  const now = await domainUuid(v, name).catch(() => undefined);
  return now === uuid ? undefined : `domain ${name} is no longer the one the plan saw (${now ? 'another uuid' : 'gone'})`;
}
