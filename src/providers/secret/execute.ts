// Carries out secret actions through virsh. The value is copied from its file into private
// scratch (0600), checked against the sha256 the plan saw, and handed to virsh as that file:
// never an argument, never printed, never in the state (only a salted digest).
import { createHash, randomBytes, randomUUID } from 'node:crypto';
import { readFile, writeFile } from 'node:fs/promises';
import path from 'node:path';
import { failpoint } from '../../failpoint.js';
import { recordKey, type SecretRecord } from '../../reconcile/inventory.js';
import type { Effect, ExecContext } from '../../reconcile/kind.js';
import type { Action } from '../../reconcile/plan.js';
import { defineSecret, readSecrets, setSecretValue, undefineSecret } from '../../tools/libvirt-secret.js';
import { withTempDir } from '../../tools/scratch.js';
import type { Virsh } from '../../tools/virsh.js';
import { saltedDigest } from './diff.js';
import type { SecretOp, SecretValue } from './ops.js';

export async function executeSecret(a: Action, ctx: ExecContext): Promise<Effect> {
  const op = a.op as SecretOp;
  const v = ctx.virsh();
  const key = recordKey({ type: 'secret', name: op.name });
  switch (op.type) {
    case 'secret.create': {
      if (op.replaces) {
        // Only the secret the plan saw goes; its usage changed, so a new one is defined.
        if ((await readSecrets(v)).some((s) => s.uuid === op.replaces)) await undefineSecret(v, op.replaces);
      }
      const uuid = randomUUID();
      const base = { type: 'secret', name: op.name, uuid, usage: op.definition.usage, usageId: op.definition.usageId, createdAt: new Date().toISOString(), uri: v.uri } as const;
      // Intent first: a kill between the define and the record leaves a secret recognisably ours (its uuid).
      await ctx.inventory.set(key, { ...base, status: 'building' });
      try {
        await defineSecret(v, { ...op.definition, uuid });
      } catch (e) {
        await ctx.inventory.forget(key);
        throw e;
      }
      failpoint('secret-defined');
      const valueDigest = op.value ? await setValue(v, uuid, op.value) : undefined;
      const rec: SecretRecord = { ...base, status: 'ready', valueDigest };
      await ctx.inventory.set(key, rec);
      return { record: [key, rec] };
    }
    case 'secret.update': {
      if (op.definition) await defineSecret(v, op.definition);
      const prev = ctx.inventory.get(key);
      const valueDigest = op.value ? await setValue(v, op.uuid, op.value) : prev?.type === 'secret' && prev.uuid === op.uuid ? prev.valueDigest : undefined;
      const def = op.definition;
      const rec: SecretRecord = {
        type: 'secret',
        name: op.name,
        uuid: op.uuid,
        usage: def?.usage ?? (prev?.type === 'secret' ? prev.usage : ''),
        usageId: def?.usageId ?? (prev?.type === 'secret' ? prev.usageId : ''),
        status: 'ready',
        valueDigest,
        adopted: op.adopted || undefined,
        createdAt: prev?.type === 'secret' ? prev.createdAt : new Date().toISOString(),
        uri: v.uri,
      };
      await ctx.inventory.set(key, rec);
      return { record: [key, rec] };
    }
    case 'secret.delete': {
      if (op.exists) await undefineSecret(v, op.uuid);
      return { forget: op.inventoryKey };
    }
  }
}

/** Sets the value read from its file (as the plan saw it); returns the salted digest to record. */
async function setValue(v: Virsh, uuid: string, value: SecretValue): Promise<string> {
  return withTempDir(async (dir) => {
    const content = await readFile(value.file);
    const sha = createHash('sha256').update(content).digest('hex');
    if (sha !== value.sha256) throw new Error(`${value.file} changed since the plan; run plan again (the secret's value was not set)`);
    const copy = path.join(dir, 'value');
    await writeFile(copy, content, { mode: 0o600 });
    await setSecretValue(v, uuid, copy, value.encoding);
    return saltedDigest(sha, randomBytes(8).toString('hex'));
  });
}
