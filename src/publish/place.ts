// Where a finished image is published (`publish:`): one object in S3 (or an S3-compatible
// store, or Cloud Storage through its S3-compatible XML API) or Azure Blob Storage. An object
// is reconcile's copy of an image when it carries the image's SHA-256 under DIGEST_KEY: that
// makes a second apply upload nothing, and tells reconcile's objects from anyone else's.
import type { PublishTarget } from '../reconcile/model.js';

/** Metadata name of the digest (Azure allows only C# identifiers, so no dashes). */
export const DIGEST_KEY = 'virtreconcilesha256';

/** Where observation keeps why a target could not be read (Observation.errors). */
export const remoteErrorKey = (to: string) => `publish:${to}`;

export interface RemoteObject {
  size: number;
  /** the image digest it was uploaded with; undefined: not put there by reconcile */
  sha256?: string;
}

export interface PutOptions {
  onProgress?: (done: number, total: number) => void;
  signal?: AbortSignal;
  /** where an interrupted upload of the same digest got to: resumed from there */
  resume?: UploadState;
  /** an upload that can be resumed says how far it got, now and then (recorded by the caller) */
  onCheckpoint?: (state: UploadState) => Promise<void>;
}

/**
 * How far an upload got, as the place needs it to go on: a page blob's offset; an S3 multipart
 * upload's id, part size and the parts done (their ETags, which completing it needs: S3's
 * ListParts is not relied on).
 */
export interface UploadState {
  offset?: number;
  uploadId?: string;
  partSize?: number;
  parts?: { n: number; etag: string }[];
}

export interface PublishPlace {
  /** what is at the target now (null: nothing) */
  head(): Promise<RemoteObject | null>;
  /**
   * uploads the file as the object, the digest with it; the object is whole or absent, never
   * half. `resumed`: what an interrupted upload had sent already, when the place found it itself.
   */
  put(file: string, sha256: string, o: PutOptions): Promise<{ resumed?: string }>;
  /** deletes the object; gone already is no error */
  remove(): Promise<void>;
}

export async function openPlace(t: PublishTarget): Promise<PublishPlace> {
  return t.place.kind === 's3' ? (await import('./s3.js')).s3Place(t) : (await import('./azure.js')).azurePlace(t);
}

/** An SDK error as one line: some (an Azure HEAD) come without a message, only a status and a code. */
export function errorText(e: unknown): string {
  const err = e as Error & { statusCode?: number; code?: string; $metadata?: { httpStatusCode?: number }; name?: string };
  if (err.message) return err.message;
  const status = err.statusCode ?? err.$metadata?.httpStatusCode;
  return [status ? `HTTP ${status}` : undefined, err.code ?? err.name].filter(Boolean).join(' ') || 'failed without a message';
}
