// Declared secrets vs the connection's secrets: define what is missing (private, persistent),
// redefine a changed description, set a changed value, replace one whose usage changed, and
// undefine on prune only what reconcile defined. A private value cannot be read back, so a
// change is told by the value file against the salted digest recorded when it was last set.
import { createHash, scryptSync } from 'node:crypto';
import type { Inventory, InventoryRecord, SecretRecord } from '../../reconcile/inventory.js';
import { recordKey } from '../../reconcile/inventory.js';
import { imageSecretUsage, type DesiredState } from '../../reconcile/model.js';
import { inSync, orphanId, type Action, type Change, type NoOp, type Refusal } from '../../reconcile/plan.js';
import { reasonOf } from '../common/decisions.js';
import type { ObservedSecret } from '../../tools/libvirt-secret.js';
import { exposedSecretFile, type SmallFileDigest } from '../common/small-files.js';
import type { DiskUse } from '../common/disk-users.js';
import { unobservable } from '../observe.js';
import type { SecretOp, SecretValue } from './ops.js';

export interface SecretDiff {
  actions: Action<SecretOp | NoOp>[];
  refusals: Refusal[];
  notes: string[];
}

/**
 * "scrypt:SALT:HEX" for a value whose sha256 is `sha`: what the inventory keeps. scrypt, so that
 * checking guesses of a weak passphrase against a copied state directory is slow (about 50 ms
 * each here), not a hash computation.
 */
export function saltedDigest(sha: string, salt: string): string {
  return `scrypt:${salt}:${scryptSync(sha, salt, 32, SCRYPT).toString('hex')}`;
}

const SCRYPT = { N: 16384, r: 8, p: 1 };

/** Whether the value with this sha256 is the one recorded (records of the first version: "SALT:HEX", sha256). */
export function sameValue(recorded: string | undefined, sha: string): boolean {
  if (!recorded) return false;
  const m = /^scrypt:([0-9a-f]+):[0-9a-f]{64}$/.exec(recorded);
  if (m) return saltedDigest(sha, m[1]!) === recorded;
  const salt = recorded.slice(0, recorded.indexOf(':'));
  return `${salt}:${createHash('sha256').update(`${salt}:${sha}`).digest('hex')}` === recorded;
}

const usageOf = (s: { usage: string; usageId: string }) => `${s.usage} ${JSON.stringify(s.usageId)}`;

/** The most virsh secret-set-value reads from a file. */
export const MAX_SECRET_FILE_BYTES = 1024;

export function diffSecrets(input: {
  state: DesiredState;
  secrets: ObservedSecret[] | undefined;
  /** sha256 of the value files */
  contents: Map<string, SmallFileDigest>;
  inventory: Inventory;
  prune: boolean;
  orphans: [string, InventoryRecord][];
  errors: Map<string, string>;
  /** which domains have the file at this path as a disk (a volume secret's image), and what its undefine must wait for */
  diskUse?: (path: string) => DiskUse;
}): SecretDiff {
  const out: SecretDiff = { actions: [], refusals: [], notes: [] };
  const all = input.secrets ?? [];
  const refuse = (id: string, message: string) => out.refusals.push({ id, message });

  for (const spec of Object.values(input.state.secrets).sort((a, b) => a.name.localeCompare(b.name))) {
    const id = `secrets.${spec.name}`;
    const key = recordKey({ type: 'secret', name: spec.name });
    const stored = input.inventory.objects[key];
    const rec = stored?.type === 'secret' ? stored : undefined;
    let value: SecretValue | undefined;
    let sha: string | undefined;
    // The encrypted image this is the passphrase of: the value must open it (never a secret the
    // image rejects: the VM would not start, and a changed passphraseFile is no rotation).
    const img = spec.usage === 'volume' ? Object.values(input.state.images).find((i) => i.encryption && imageSecretUsage(input.state, i) === spec.usageId) : undefined;
    if (spec.valueFile !== undefined) {
      const file = input.contents.get(spec.valueFile);
      if (file === undefined) {
        refuse(id, `${spec.origin}: valueFile: ${unobservable(input.errors, spec.valueFile)}`);
        continue;
      }
      // virsh reads a value of at most 1024 bytes ("Value too large" beyond).
      if (file.size > MAX_SECRET_FILE_BYTES) {
        refuse(id, `${spec.origin}: valueFile ${spec.valueFile} is ${file.size} bytes; libvirt's virsh sets a secret of at most ${MAX_SECRET_FILE_BYTES}`);
        continue;
      }
      sha = file.sha256;
      const warn = spec.name.includes('/') ? undefined : exposedSecretFile(`${id}: valueFile`, spec.valueFile, file);
      if (warn) out.notes.push(warn);
      value = {
        file: spec.valueFile,
        encoding: spec.encoding,
        signature: file.signature,
        ...(img
          ? {
              opens: {
                path: spec.usageId,
                format: img.format === 'raw' ? 'raw' : 'qcow2',
                rekey: !img.adopt,
                iterTime: img.encryption!.iterTime,
                previousFile: img.encryption!.previousPassphraseFile,
              },
            }
          : {}),
      };
    }
    // A secret an image at a path opens with comes after that image (it is checked to open it).
    const deps = img?.location.kind === 'path' ? [`images.${img.name}`] : [];
    const definition = { usage: spec.usage, usageId: spec.usageId, description: spec.description };
    const byUsage = all.find((s) => s.usage === spec.usage && s.usageId === spec.usageId);
    const recorded = rec ? all.find((s) => s.uuid === rec.uuid) : undefined;

    // The recorded secret under another usage (the YAML changed it): libvirt cannot change a
    // secret's usage, so it is replaced (its value comes from the file: nothing is lost).
    if (recorded && !rec?.adopted && (recorded.usage !== spec.usage || recorded.usageId !== spec.usageId)) {
      if (byUsage) {
        refuse(id, `${spec.origin}: usage ${usageOf(spec)} is already the usage of secret ${byUsage.uuid}, which reconcile did not define; undefine it or declare another usage`);
        continue;
      }
      out.actions.push({
        id,
        resource: 'secret',
        kind: 'replace',
        code: 'rebuild',
        reason: `usage ${usageOf(recorded)} -> ${usageOf(spec)} (libvirt cannot change a secret's usage; its value is set again from ${spec.valueFile})`,
        destructive: false,
        changes: [{ field: 'usage', from: usageOf(recorded), to: usageOf(spec) }],
        dependsOn: deps,
        op: { type: 'secret.create', name: spec.name, definition, value, replaces: recorded.uuid },
      });
      continue;
    }
    if (!byUsage) {
      if (spec.adopt && value === undefined) {
        refuse(id, `${spec.origin}: there is no secret of usage ${usageOf(spec)} to adopt; declare valueFile to create it`);
        continue;
      }
      out.actions.push({
        id,
        resource: 'secret',
        kind: 'create',
        code: 'new',
        reason: `new secret (usage ${usageOf(spec)}, private)`,
        destructive: false,
        changes: [
          { field: 'usage', from: '', to: usageOf(spec) },
          ...(spec.description !== undefined ? [{ field: 'description', from: '', to: spec.description }] : []),
          ...(value ? [{ field: 'value', from: '', to: `from ${value.file}` }] : []),
        ],
        dependsOn: deps,
        op: { type: 'secret.create', name: spec.name, definition, value },
      });
      continue;
    }
    // Reconcile's under this name, or under the name it had before (an image's kept secret the YAML
    // now declares with its usage): still reconcile's, its record moved to this name.
    const before = input.orphans.map(([, r]) => r).find((r): r is SecretRecord => r.type === 'secret' && r.uuid === byUsage.uuid && !r.adopted);
    const ours = (!!rec && rec.uuid === byUsage.uuid && !rec.adopted) || !!before;
    if (!ours && !spec.adopt) {
      // A disk's secret (kept by reconcile, named image/NAME) is adopted by declaring it.
      const how = spec.name.includes('/') ? `declare it under secrets: (usage: volume, volume: ${spec.usageId}, adopt: true)` : `add adopt: true to secrets.${spec.name}`;
      refuse(
        id,
        `${spec.origin}: a secret of usage ${usageOf(spec)} exists (${byUsage.uuid}) and reconcile did not define it, so it is left alone. To manage it, ${how} (its value is then set from valueFile; it is never undefined)`,
      );
      continue;
    }
    // Reconcile sets values only in private, persistent secrets (one that is not private gives
    // its value back to anyone who asks libvirt; an ephemeral one loses it at a restart).
    if (!ours && (!byUsage.private || byUsage.ephemeral)) {
      refuse(
        id,
        `${spec.origin}: the secret of usage ${usageOf(spec)} (${byUsage.uuid}) is ${!byUsage.private ? 'not private (libvirt gives its value back to anyone who asks)' : 'ephemeral (its value is lost when libvirtd restarts)'}; reconcile sets values only in private, persistent secrets: redefine it with private='yes' ephemeral='no'`,
      );
      continue;
    }
    const changes: Change[] = [];
    const finish = ours && !!rec && rec.status === 'building';
    if (finish) changes.push({ field: 'state', from: 'incomplete (an apply was interrupted)', to: 'complete' });
    // A re-key of its image an apply began and did not finish: it resumes where it stopped.
    const rekeying = rec?.uuid === byUsage.uuid ? rec.rekey : undefined;
    // The passphrase it was being re-keyed to may be the only one that opens it now: a file
    // changed again since cannot finish that re-key (nor start another).
    if (rekeying && value && sha && rec?.rekeyTo && !sameValue(rec.rekeyTo, sha)) {
      refuse(
        id,
        `${spec.origin}: an interrupted apply was re-keying ${spec.usageId} to the passphrase ${value.file} held then, and the file has changed since; the image may open only with that passphrase now. Put it back in ${value.file} and apply (the re-key finishes), then change it`,
      );
      continue;
    }
    if (rekeying && !finish) changes.push({ field: 'state', from: `re-key of ${spec.usageId} interrupted (${rekeying})`, to: 'complete' });
    if (spec.description !== undefined && spec.description !== (byUsage.description ?? ''))
      changes.push({ field: 'description', from: byUsage.description ?? 'none', to: spec.description });
    const valueRecorded = rec?.uuid === byUsage.uuid ? rec.valueDigest : before?.valueDigest;
    const setValue = value && sha && (finish || !!rekeying || !sameValue(valueRecorded, sha));
    if (setValue) changes.push({ field: 'value', from: valueRecorded ? 'as set before' : 'not set by reconcile', to: `from ${value!.file}` });
    // A changed passphrase of an image: the image is re-keyed to it in place first, unless it
    // opens with it already (told by the apply: checking costs a LUKS key derivation).
    const rekeyNote =
      setValue && value!.opens && valueRecorded
        ? value!.opens.rekey
          ? `passphrase file changed (${value!.file}): ${spec.usageId} is re-keyed in place unless it opens with it already`
          : `passphrase file changed (${value!.file}): images.${img!.name} is adopted, so it must open with it already (reconcile re-keys only images it made)`
        : undefined;
    // A record moved from the old name is written under this one (an update with nothing else).
    if (before && !rec) changes.push({ field: 'name', from: before.name, to: spec.name });
    if (!changes.length) {
      out.actions.push(inSync('secret', id, ours));
      continue;
    }
    out.actions.push({
      id,
      resource: 'secret',
      kind: 'update',
      code: finish || rekeying ? 'interrupted' : 'drift',
      reason:
        changes.some((c) => c.field === 'value') && changes.length === 1
          ? (rekeyNote ?? (valueRecorded ? `value file changed since the value was set (${value!.file})` : `value set from ${value!.file} (reconcile has not set it before)`))
          : reasonOf(changes),
      destructive: false,
      changes,
      dependsOn: deps,
      op: {
        type: 'secret.update',
        name: spec.name,
        uuid: byUsage.uuid,
        usage: spec.usage,
        usageId: spec.usageId,
        definition: changes.some((c) => c.field === 'description') ? { ...definition, uuid: byUsage.uuid } : undefined,
        value: setValue ? value : undefined,
        adopted: !ours,
        finish,
        movedFrom: before && !rec ? recordKey({ type: 'secret', name: before.name }) : undefined,
      },
    });
  }

  for (const [key, stored] of input.orphans) {
    if (stored.type !== 'secret') continue;
    const rec = stored as SecretRecord;
    const id = orphanId(key);
    if (!input.prune) {
      out.notes.push(
        `secret ${rec.name} left the YAML; \`apply --prune\` ${rec.adopted ? 'forgets it (it was adopted: never undefined)' : 'undefines it, unless it is declared again under another name or a domain still uses it'}`,
      );
      continue;
    }
    const found = input.secrets === undefined ? undefined : all.find((s) => s.uuid === rec.uuid);
    if (input.secrets === undefined) continue;
    // The same libvirt secret, declared now under another name (an image's kept secret the YAML
    // now declares with its usage, say): forgotten here, never undefined.
    const now = found && Object.values(input.state.secrets).find((s) => s.usage === found.usage && s.usageId === found.usageId);
    if (now) {
      out.actions.push({
        id,
        resource: 'secret',
        kind: 'delete',
        code: 'not-ours',
        reason: `declared now as secrets.${now.name}: forgotten under its old name, not undefined`,
        destructive: false,
        changes: [],
        // After its record has moved to the new name (which reads the old one).
        dependsOn: [`secrets.${now.name}`],
        op: { type: 'secret.delete', name: rec.name, uuid: rec.uuid, exists: false, inventoryKey: key },
      });
      continue;
    }
    if (!found || rec.adopted) {
      out.actions.push({
        id,
        resource: 'secret',
        kind: 'delete',
        code: found ? 'not-ours' : 'gone',
        reason: found ? 'adopted: forgotten, never undefined' : 'already gone; forgotten from the inventory',
        destructive: false,
        changes: [],
        dependsOn: [],
        op: { type: 'secret.delete', name: rec.name, uuid: rec.uuid, exists: false, inventoryKey: key },
      });
      continue;
    }
    // A declared pool cannot still name it (validation requires a pool's secret to be declared);
    // a domain can still open a disk with it — one the YAML adopts, or one it does not know.
    const use = found.usage === 'volume' ? input.diskUse?.(found.usageId) : undefined;
    if (use?.unknown || use?.blocking.length) {
      refuse(
        id,
        use.unknown
          ? `secret ${rec.name} left the YAML, but reconcile cannot tell whether a domain opens ${found.usageId} with it (${use.unknown}); it is not undefined`
          : `secret ${rec.name} left the YAML, but domain ${use.blocking.join(', ')} still ${use.blocking.length > 1 ? 'have' : 'has'} ${found.usageId} as a disk, which it opens with this secret; it is not undefined`,
      );
      continue;
    }
    out.actions.push({
      id,
      resource: 'secret',
      kind: 'delete',
      code: 'left-yaml',
      reason: `secret ${rec.name} left the YAML (usage ${usageOf(found)}): undefined`,
      destructive: true,
      changes: [],
      dependsOn: use?.after ?? [],
      op: { type: 'secret.delete', name: rec.name, uuid: rec.uuid, exists: true, inventoryKey: key },
    });
  }
  return out;
}
