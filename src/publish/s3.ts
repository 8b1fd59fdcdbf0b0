// Publishing to S3, S3-compatible stores and Cloud Storage (its XML API with HMAC keys):
// multipart uploads read from the file in 16 MiB parts, 4 at a time (64 MiB of memory
// whatever the image's size); the object appears only when the upload completes. Each part
// done is recorded, so an interrupted upload goes on with the others (its upload id alive).
import { open, readFile, stat } from 'node:fs/promises';
import { CompleteMultipartUploadCommand, CreateMultipartUploadCommand, DeleteObjectCommand, HeadObjectCommand, PutObjectCommand, UploadPartCommand } from '@aws-sdk/client-s3';
import pLimit from 'p-limit';
import { failpoint } from '../failpoint.js';
import { s3Client } from '../object-storage/s3-client.js';
import type { PublishTarget } from '../reconcile/model.js';
import { DIGEST_KEY, type PublishPlace, type PutOptions } from './place.js';

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
      const size = (await stat(file)).size;
      // Small enough for one request: atomic by itself.
      if (size <= PART) {
        await client.send(new PutObjectCommand({ ...at, Body: await readFile(file), Metadata: { [DIGEST_KEY]: sha256 } }), { abortSignal: o.signal });
        o.onProgress?.(size, size);
        return {};
      }
      // At most 10,000 parts: a larger image takes larger parts.
      const partSize = Math.max(PART, Math.ceil(size / 9_000 / MiB) * MiB);
      const count = Math.ceil(size / partSize);
      const multipart = async (r: PutOptions['resume']): Promise<void> => {
        let uploadId = r?.uploadId && r.partSize === partSize ? r.uploadId : undefined;
        const done = new Map<number, string>(uploadId ? (r?.parts ?? []).map((x) => [x.n, x.etag]) : []);
        if (!uploadId) {
          uploadId = (await client.send(new CreateMultipartUploadCommand({ ...at, Metadata: { [DIGEST_KEY]: sha256 } }), { abortSignal: o.signal })).UploadId!;
          await o.onCheckpoint?.({ uploadId, partSize, parts: [] });
        }
        const id = uploadId;
        let sent = [...done.keys()].reduce((n, k) => n + Math.min(partSize, size - (k - 1) * partSize), 0);
        o.onProgress?.(sent, size);
        // Each part read into memory, four at a time (64 MiB with 16 MiB parts); each one done is
        // recorded (in order, one write at a time) so that a resume sends only the others.
        let saving = Promise.resolve();
        const checkpoint = () => {
          const parts = [...done].map(([n, etag]) => ({ n, etag }));
          saving = saving.then(() => o.onCheckpoint?.({ uploadId: id, partSize, parts }));
          return saving;
        };
        const fh = await open(file, 'r');
        try {
          const limit = pLimit(4);
          await Promise.all(
            Array.from({ length: count }, (_, k) => k + 1)
              .filter((n) => !done.has(n))
              .map((n) =>
                limit(async () => {
                  const len = Math.min(partSize, size - (n - 1) * partSize);
                  const buf = Buffer.alloc(len);
                  const { bytesRead } = await fh.read(buf, 0, len, (n - 1) * partSize);
                  if (bytesRead !== len) throw new Error(`${file} changed size while it was uploaded`);
                  const res = await client.send(new UploadPartCommand({ ...at, UploadId: id, PartNumber: n, Body: buf }), { abortSignal: o.signal });
                  done.set(n, res.ETag!);
                  sent += len;
                  o.onProgress?.(sent, size);
                  await checkpoint();
                  failpoint('publish-part-uploaded');
                }),
              ),
          );
        } finally {
          await fh.close();
        }
        await saving;
        const parts = [...done].sort(([a], [b]) => a - b).map(([PartNumber, ETag]) => ({ PartNumber, ETag }));
        await client.send(new CompleteMultipartUploadCommand({ ...at, UploadId: id, MultipartUpload: { Parts: parts } }), { abortSignal: o.signal });
      };
      try {
        await multipart(o.resume);
      } catch (e) {
        // The upload the record names is gone (aborted by a lifecycle rule, or by hand): again, whole.
        if (!o.resume?.uploadId || (e as { name?: string }).name !== 'NoSuchUpload') throw e;
        await multipart(undefined);
      }
      return {};
    },
    async remove() {
      await client.send(new DeleteObjectCommand(at));
    },
  };
}

const MiB = 1024 * 1024;
const PART = 16 * MiB;
