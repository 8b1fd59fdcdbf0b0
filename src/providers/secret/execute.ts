// Carries out secret actions through virsh. The value is read from its file (checked to be as
// the plan saw it) and handed to virsh on its standard input: never an argument, never a
// copy on disk, never printed, never in the state (only a salted digest).
import { randomBytes, randomUUID } from 'node:crypto';
import { lstat } from 'node:fs/promises';
import { rekeyWith, unlocks } from '../../tools/qemu-img.js';
import { clearInterruptedRekey, RekeyNotStarted, rekeyImage } from '../../tools/luks-rekey.js';
import { rememberSecret } from '../../tools/redact.js';
import { failpoint } from '../../failpoint.js';
import { recordKey, type SecretRecord } from '../../reconcile/inventory.js';
import type { Effect, ExecContext } from '../../reconcile/kind.js';
import type { Action } from '../../reconcile/plan.js';
import { defineSecret, readSecrets, setSecretValue, undefineSecret } from '../../tools/libvirt-secret.js';
import { readUnchanged, sha256Hex } from '../common/small-files.js';
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
      // The value first: a file that changed or is not what its encoding says defines nothing.
      const read = op.value ? await readValue(op.value) : undefined;
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
      let valueDigest: string | undefined;
      try {
        valueDigest = op.value && read ? await setValue(v, uuid, op.value, read) : undefined;
      } catch (e) {
        // A secret without its value is worth nothing: it goes, with its record.
        await undefineSecret(v, uuid).catch(() => undefined);
        await ctx.inventory.forget(key);
        throw e;
      }
      const rec: SecretRecord = { ...base, status: 'ready', valueDigest };
      await ctx.inventory.set(key, rec);
      return { record: [key, rec] };
    }
    case 'secret.update': {
      const prev = ctx.inventory.get(key) ?? (op.movedFrom ? ctx.inventory.get(op.movedFrom) : undefined);
      const read = op.value ? await readValue(op.value, { rekeying: true }) : undefined;
      if (op.definition) await defineSecret(v, op.definition);
      if (op.value?.opens && read && prev?.type === 'secret' && prev.uuid === op.uuid) await rekeyIfNeeded(ctx, key, prev, op.value, read.content);
      const valueDigest = op.value && read ? await setValue(v, op.uuid, op.value, read) : prev?.type === 'secret' && prev.uuid === op.uuid ? prev.valueDigest : undefined;
      const rec: SecretRecord = {
        type: 'secret',
        name: op.name,
        uuid: op.uuid,
        usage: op.usage,
        usageId: op.usageId,
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

/**
 * An image's changed passphrase: the image is re-keyed to it first (unless it opens with it
 * already), each step recorded so that an interrupted apply resumes rather than guesses — the
 * secret still holds the old passphrase until the image opens only with the new one.
 */
async function rekeyIfNeeded(ctx: ExecContext, key: string, prev: SecretRecord, value: SecretValue, passphrase: Buffer): Promise<void> {
  const img = value.opens!;
  if (!(await lstat(img.path).catch(() => undefined))) return;
  if (prev.rekey === 'keyed') {
    // The secret is set only to a passphrase that opens the image.
    if (!(await unlocks(img.path, img.format, value.file)))
      throw new Error(`${img.path} was re-keyed by an interrupted apply to another passphrase than ${value.file} holds now; put that one back and apply, then change it`);
    return;
  }
  if (prev.rekey === 'started') await clearInterruptedRekey(ctx.virsh(), img.path);
  const opensAlready = await unlocks(img.path, img.format, value.file);
  if (prev.rekey !== 'started' && opensAlready) return;
  if (!img.rekey)
    throw new Error(`the passphrase in ${value.file} does not open ${img.path}, an image reconcile did not make (adopted): it is not re-keyed; the secret is left as it was`);
  const started: SecretRecord = {
    ...prev,
    rekey: 'started',
    rekeyTo: prev.rekey === 'started' && prev.rekeyTo ? prev.rekeyTo : saltedDigest(sha256Hex(passphrase), randomBytes(8).toString('hex')),
  };
  await ctx.inventory.set(key, started);
  failpoint('rekey-started');
  let r: Awaited<ReturnType<typeof rekeyImage>>;
  try {
    r = await rekeyImage(ctx.virsh(), {
      path: img.path,
      format: img.format,
      secretUsage: prev.usageId,
      passphrase,
      passphraseFile: value.file,
      opensAlready,
      iterTime: img.iterTime,
      previousFile: img.previousFile,
    });
  } catch (e) {
    // Stopped before any keyslot changed: nothing to resume (a later file may hold another passphrase).
    if (e instanceof RekeyNotStarted) await ctx.inventory.set(key, prev);
    throw e;
  }
  const how =
    'qemuImg' in r.through
      ? 'qemu-img amend with previousPassphraseFile'
      : r.through.helper
        ? `a paused helper domain (${r.through.domain})`
        : `running domain ${r.through.domain}`;
  ctx.log(
    `${img.path}: re-keyed in place through ${how}: ${[
      r.added ? 'a keyslot for the new passphrase added' : 'the new passphrase opened it already',
      r.erased ? "the old passphrase's keyslots erased" : 'no keyslot of the old passphrase was left',
    ].join(', ')}`,
  );
  await ctx.inventory.set(key, { ...started, rekey: 'keyed' });
  failpoint('rekey-keyed');
}

/**
 * The value read from its file as the plan saw it, checked before anything is defined: a
 * base64 file must hold base64 (libvirt would otherwise store garbage as the key). A new
 * secret's passphrase must open its image as it is (only a secret that holds the old one can
 * re-key it).
 */
async function readValue(value: SecretValue, o: { rekeying?: boolean } = {}): Promise<{ content: Buffer; sha256: string }> {
  const f = await readUnchanged(value.file, value.signature);
  rememberSecret(f.content);
  const img = value.opens;
  if (!o.rekeying && img && (await lstat(img.path).catch(() => undefined)) && !(await unlocks(img.path, img.format, value.file))) {
    // A new secret has no old passphrase to re-key with; a declared previousPassphraseFile has.
    if (img.rekey && img.previousFile && (await unlocks(img.path, img.format, img.previousFile))) {
      await rekeyWith(img.path, img.format, { passphraseFile: img.previousFile }, { passphraseFile: value.file, iterTime: img.iterTime });
      return f;
    }
    throw new Error(
      `the passphrase in ${value.file} does not open ${img.path}; the secret is left as it was (a new secret cannot re-key an image by itself: put the passphrase that opens it in the file, or declare it as encryption.previousPassphraseFile)`,
    );
  }
  if (value.encoding === 'base64' && !/^[A-Za-z0-9+/]+={0,2}\s*$/.test(f.content.toString('latin1')))
    throw new Error(
      `${value.file} is not base64 (encoding: base64, the default for ceph: a key as \`ceph auth get-key\` prints it); if it holds the value itself, declare encoding: raw`,
    );
  return f;
}

/** Sets the value, handed to virsh on its standard input (never a file, never an argument); returns the salted digest to record. */
async function setValue(v: Virsh, uuid: string, value: SecretValue, read: { content: Buffer; sha256: string }): Promise<string> {
  await setSecretValue(v, uuid, read.content, value.encoding);
  return saltedDigest(read.sha256, randomBytes(8).toString('hex'));
}
