// Backups copied to S3 or an S3-compatible server (MinIO, Ceph RGW, s3rver): multipart
// uploads streamed from the file (lib-storage), downloads streamed to a temporary file.
import { createReadStream, createWriteStream } from 'node:fs';
import { rename, rm } from 'node:fs/promises';
import type { Readable } from 'node:stream';
import { pipeline } from 'node:stream/promises';
import { DeleteObjectCommand, GetObjectCommand } from '@aws-sdk/client-s3';
import { Upload } from '@aws-sdk/lib-storage';
import { s3Client } from '../object-storage/s3-client.js';
import type { OffsiteTarget } from '../reconcile/model.js';
import { keyOf, type OffsiteStore } from './store.js';

export async function s3Store(t: Extract<OffsiteTarget, { kind: 's3' }>): Promise<OffsiteStore> {
  // The SDK warns on every Node 20 process that its versions after January 2027 need Node 22;
  // this project pins its version, so the warning would only be noise in every backup log.
  const client = await s3Client(t, { requestTimeoutMs: 60_000 });
  const key = (name: string) => keyOf(t.prefix, name);
  return {
    url: t.url,
    async put(local, name) {
      await new Upload({ client, params: { Bucket: t.bucket, Key: key(name), Body: createReadStream(local) }, partSize: 16 * 1024 * 1024, queueSize: 4 }).done();
    },
    async get(name, local) {
      const r = await client.send(new GetObjectCommand({ Bucket: t.bucket, Key: key(name) }));
      const partial = `${local}.partial`;
      try {
        await pipeline(r.Body as Readable, createWriteStream(partial, { mode: 0o600 }));
        await rename(partial, local);
      } catch (e) {
        await rm(partial, { force: true });
        throw e;
      }
    },
    async remove(name) {
      await client.send(new DeleteObjectCommand({ Bucket: t.bucket, Key: key(name) }));
    },
  };
}
