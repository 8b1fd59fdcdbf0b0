// Publishing to Azure Blob Storage: a VHD as a page blob (Azure makes disks only from fixed
// VHDs in page blobs), written in 4 MiB pages with the all-zero ones skipped (a new page blob
// reads as zeros); anything else as a block blob. A page blob exists from its creation, so
// the digest is set only once every page is written: a half upload never passes as done.
import { open, stat } from 'node:fs/promises';
import { azureContainer } from '../object-storage/azure-client.js';
import type { PublishTarget } from '../reconcile/model.js';
import { failpoint } from '../failpoint.js';
import { DIGEST_KEY, type PublishPlace } from './place.js';

const PAGE_CHUNK = 4 * 1024 * 1024;
// How often an upload's progress is recorded for a resume (a journal line each time).
const CHECKPOINT = 64 * 1024 * 1024;

export async function azurePlace(t: PublishTarget): Promise<PublishPlace> {
  const place = t.place as Extract<PublishTarget['place'], { kind: 'azure' }>;
  const container = await azureContainer({ ...place, url: t.to }, { tryTimeoutMs: 120_000 });
  const blob = container.getBlobClient(place.prefix);
  return {
    async head() {
      try {
        const p = await blob.getProperties();
        return { size: p.contentLength ?? 0, sha256: p.metadata?.[DIGEST_KEY] };
      } catch (e) {
        if ((e as { statusCode?: number }).statusCode === 404) return null;
        throw e;
      }
    },
    async put(file, sha256, o) {
      await container.createIfNotExists();
      const size = (await stat(file)).size;
      if (!t.pageBlob) {
        await container.getBlockBlobClient(place.prefix).uploadFile(file, {
          blockSize: 8 * 1024 * 1024,
          concurrency: 4,
          metadata: { [DIGEST_KEY]: sha256 },
          abortSignal: o.signal,
          onProgress: (p) => o.onProgress?.(p.loadedBytes, size),
        });
        return;
      }
      if (size % 512) throw new Error(`${t.to}: a page blob takes whole 512-byte pages; the file is ${size} bytes (a fixed VHD always is)`);
      const page = container.getPageBlobClient(place.prefix);
      // An interrupted upload of this very image goes on where it was checkpointed, if the blob is
      // still that half (its size, no digest yet); otherwise it is made again from nothing: an
      // earlier half (or another image's pages) must not show through.
      const from = o.resume?.offset;
      const half = from !== undefined ? await page.getProperties({ abortSignal: o.signal }).catch(() => undefined) : undefined;
      let start = 0;
      if (half && from !== undefined && half.contentLength === size && !half.metadata?.[DIGEST_KEY] && from % PAGE_CHUNK === 0) start = Math.min(from, size);
      else {
        await page.deleteIfExists({ abortSignal: o.signal });
        await page.create(size, { abortSignal: o.signal });
      }
      const fh = await open(file, 'r');
      try {
        const buf = Buffer.alloc(PAGE_CHUNK);
        for (let off = start; off < size; off += PAGE_CHUNK) {
          const n = Math.min(PAGE_CHUNK, size - off);
          const { bytesRead } = await fh.read(buf, 0, n, off);
          if (bytesRead !== n) throw new Error(`${file} changed size while it was uploaded`);
          const chunk = buf.subarray(0, n);
          if (!isZero(chunk)) await page.uploadPages(chunk, off, n, { abortSignal: o.signal });
          o.onProgress?.(off + n, size);
          if ((off + n) % CHECKPOINT === 0 && off + n < size) {
            await o.onCheckpoint?.({ offset: off + n });
            failpoint('publish-page-checkpoint');
          }
        }
      } finally {
        await fh.close();
      }
      failpoint('publish-pages-written');
      await page.setMetadata({ [DIGEST_KEY]: sha256 }, { abortSignal: o.signal });
    },
    async remove() {
      await blob.deleteIfExists();
    },
  };
}

function isZero(b: Buffer): boolean {
  for (let i = 0; i < b.length; i += 8) if (b.readBigUInt64LE(i) !== 0n) return false;
  return true;
}
