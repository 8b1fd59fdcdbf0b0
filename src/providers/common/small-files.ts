// Small files whose content decides a plan (cloud-init seed files, secret values): read once
// through a descriptor, only if regular and small (a FIFO would block, /dev/zero never end),
// and known by a stat signature that changes with any write — what a plan carries to its
// apply instead of a hash of the content (a hash of a weak password in a plan printed by CI
// would let anyone check a guess).
import { createHash } from 'node:crypto';
import { constants } from 'node:fs';
import { open } from 'node:fs/promises';

/** Larger files are not read: seeds and secrets hold configuration, not payloads. */
export const MAX_SMALL_FILE_BYTES = 16 * 1024 * 1024;

export interface SmallFile {
  content: Buffer;
  sha256: string;
  size: number;
  /** device, inode, size, mtime and ctime: any write changes it */
  signature: string;
  /** permission bits (a secret readable by group or others is warned about) */
  mode: number;
}

/** What observation keeps of a small file: never its content. */
export type SmallFileDigest = Omit<SmallFile, 'content'>;

export const sha256Hex = (b: Buffer | string) => createHash('sha256').update(b).digest('hex');

export async function readSmallFile(p: string): Promise<SmallFile> {
  // Non-blocking: opening a FIFO for reading would wait for a writer.
  const fh = await open(p, constants.O_RDONLY | constants.O_NONBLOCK);
  try {
    const st = await fh.stat({ bigint: true });
    if (!st.isFile()) throw new Error(`${p} is not a regular file`);
    if (st.size > BigInt(MAX_SMALL_FILE_BYTES)) throw new Error(`${p} is over ${MAX_SMALL_FILE_BYTES / 1024 / 1024} MiB, too large for a seed or secret file`);
    const content = await fh.readFile();
    return {
      content,
      sha256: sha256Hex(content),
      size: content.length,
      signature: `${st.dev}:${st.ino}:${st.size}:${st.mtimeNs}:${st.ctimeNs}`,
      mode: Number(st.mode & 0o7777n),
    };
  } finally {
    await fh.close();
  }
}

/** The file as the plan saw it (its signature), or an error saying it changed since. */
export async function readUnchanged(p: string, signature: string): Promise<SmallFile> {
  const f = await readSmallFile(p);
  if (f.signature !== signature) throw new Error(`${p} changed since the plan; run plan again`);
  return f;
}

/** The warning for a secret's file that others than its owner can read, or undefined. */
export function exposedSecretFile(what: string, p: string, f: { mode: number } | undefined): string | undefined {
  if (!f || (f.mode & 0o077) === 0) return undefined;
  return `warning: ${what} ${p} can be read by others than its owner (mode ${(f.mode & 0o777).toString(8).padStart(4, '0')}); chmod 600 it`;
}

/**
 * Why an encrypted image cannot be planned with its passphraseFile: it could not be read (a FIFO,
 * a directory, missing: qemu-img would fail on it, or block on a FIFO, holding the lock), or it
 * is empty (LUKS with an empty passphrase opens for anyone). Undefined: usable.
 */
export function passphraseRefusal(
  spec: { origin: string; encryption?: { passphraseFile: string } },
  contents: Map<string, SmallFileDigest>,
  errors: Map<string, string>,
): string | undefined {
  const f = spec.encryption?.passphraseFile;
  if (!f) return undefined;
  const got = contents.get(f);
  if (!got) return `${spec.origin}: encryption.passphraseFile: ${errors.get(f) ?? `${f} was not read`}`;
  if (got.size === 0) return `${spec.origin}: encryption.passphraseFile ${f} is empty; a LUKS image with an empty passphrase opens for anyone`;
  return undefined;
}
