// Publishing to S3, S3-compatible stores and Cloud Storage (its XML API with HMAC keys):
// multipart uploads streamed from the file in 16 MiB parts, 4 at a time (64 MiB of memory
// whatever the image's size); the object appears only when the upload completes.
import { createReadStream } from 'node:fs';
import { DeleteObjectCommand, HeadObjectCommand } from '@aws-sdk/client-s3';
import { Upload } from '@aws-sdk/lib-storage';
import { s3Client } from '../object-storage/s3-client.js';
import type { PublishTarget } from '../reconcile/model.js';
import { DIGEST_KEY, type PublishPlace } from './place.js';

export async function s3Place(t: PublishTarget): Promise<PublishPlace> {
  const place = t.place as Extract<PublishTarget['place'], { kind: 's3' }>;
  const client = await s3Client(place, { requestTimeoutMs: 120_000, gs: t.to.startsWith('gs://') });
  const at = { Bucket: place.bucket, Key: place.prefix };
  return {
    async head() {
      try {
        const r = await client.send(new HeadObjectCommand(at));
        return { size: r.ContentLength ?? 0, sha256: r.Metadata?.[DIGEST_KEY] };
      } catch (e) {
        const err = e as { name?: string; $metadata?: { httpStatusCode?: number } };
        if (err.name === 'NotFound' || err.$metadata?.httpStatusCode === 404) return null;
        throw e;
      }
    },
    async put(file, sha256, o) {
      const up = new Upload({
        client,
        params: { ...at, Body: createReadStream(file), Metadata: { [DIGEST_KEY]: sha256 } },
        partSize: 16 * 1024 * 1024,
        queueSize: 4,
        abortController: o.signal ? abortFrom(o.signal) : undefined,
      });
      up.on('httpUploadProgress', (p) => {
        if (p.loaded !== undefined && p.total !== undefined) o.onProgress?.(p.loaded, p.total);
      });
      await up.done();
    },
    async remove() {
      await client.send(new DeleteObjectCommand(at));
    },
  };
}

function abortFrom(signal: AbortSignal): AbortController {
  const c = new AbortController();
  if (signal.aborted) c.abort();
  else signal.addEventListener('abort', () => c.abort(), { once: true });
  return c;
}
