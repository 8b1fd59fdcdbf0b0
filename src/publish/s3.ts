// Publishing to S3, S3-compatible stores and Cloud Storage (its XML API with HMAC keys):
// multipart uploads streamed from the file in 16 MiB parts, 4 at a time (64 MiB of memory
// whatever the image's size); the object appears only when the upload completes.
import { createReadStream } from 'node:fs';
import { readFile } from 'node:fs/promises';
import { DeleteObjectCommand, HeadObjectCommand, S3Client } from '@aws-sdk/client-s3';
import { Upload } from '@aws-sdk/lib-storage';
import { parseCredentials } from '../offsite/s3.js';
import type { PublishTarget } from '../reconcile/model.js';
import { DIGEST_KEY, type PublishPlace } from './place.js';

export async function s3Place(t: PublishTarget): Promise<PublishPlace> {
  const place = t.place as Extract<PublishTarget['place'], { kind: 's3' }>;
  process.env.AWS_SDK_JS_NODE_VERSION_SUPPORT_WARNING_DISABLED ??= 'true';
  const credentials = place.credentialsFile ? parseCredentials(await readFile(place.credentialsFile, 'utf8'), place.credentialsFile) : undefined;
  const gs = t.to.startsWith('gs://');
  const client = new S3Client({
    region: place.region ?? process.env.AWS_REGION ?? 'us-east-1',
    endpoint: place.endpoint,
    forcePathStyle: place.pathStyle,
    credentials,
    maxAttempts: 3,
    requestHandler: { connectionTimeout: 15_000, requestTimeout: 120_000 },
    // Cloud Storage's XML API rejects the CRC checksums this SDK adds by default.
    ...(gs ? { requestChecksumCalculation: 'WHEN_REQUIRED' as const, responseChecksumValidation: 'WHEN_REQUIRED' as const } : {}),
  });
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
