// Off-host places backups are copied to (`copyTo:`): object storage (S3 and S3-compatible,
// Azure Blob) and a directory over SSH. One interface, one file per kind; each is loaded
// only when a schedule names one (the SDKs are large).
import type { OffsiteTarget } from '../reconcile/model.js';

/** Files kept under one prefix (a key prefix, or a directory), by their base names. */
export interface OffsiteStore {
  /** the target as the YAML names it (never a credential) */
  readonly url: string;
  /** Sends a local file; it appears under `name` only once complete. */
  put(local: string, name: string): Promise<void>;
  /** Fetches `name` into `local` (written under a temporary name, renamed when complete). */
  get(name: string, local: string): Promise<void>;
  /** Removes `name`; one already gone is no error. */
  remove(name: string): Promise<void>;
}

export async function openStore(t: OffsiteTarget): Promise<OffsiteStore> {
  switch (t.kind) {
    case 's3':
      return (await import('./s3.js')).s3Store(t);
    case 'azure':
      return (await import('./azure.js')).azureStore(t);
    case 'ssh':
      return (await import('./ssh.js')).sshStore(t);
  }
}

/** A key under a prefix: "prefix/name", or "name" with none. */
export const keyOf = (prefix: string, name: string) => (prefix ? `${prefix.replace(/\/+$/, '')}/${name}` : name);
