// Publishing to Azure Blob Storage: a VHD as a page blob (Azure makes disks only from fixed
// VHDs in page blobs), written in 4 MiB pages with the all-zero ones skipped (a new page blob
// reads as zeros); anything else as a block blob, staged block by block (a resume sends only
// the blocks not staged yet). A page blob exists from its creation, so
// the digest is set only once every page is written: a half upload never passes as done.
import { open, stat } from 'node:fs/promises';
import type { BlockBlobClient } from '@azure/storage-blob';
import { azureContainer } from '../object-storage/azure-client.js';
import type { PublishTarget } from '../reconcile/model.js';
import { failpoint } from '../failpoint.js';
import { DIGEST_KEY, type PublishPlace, type PutOptions } from './place.js';

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
      if (!t.pageBlob) return putBlocks(container.getBlockBlobClient(place.prefix), file, size, sha256, o);
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
      return {};
    },
    async remove() {
      await blob.deleteIfExists();
    },
  };
}

const BLOCK_MIN = 8 * 1024 * 1024;
// Azure takes at most 50,000 blocks in a blob.
const MAX_BLOCKS = 50_000;
const BLOCKS_AT_ONCE = 4;

/**
 * A block blob, staged block by block and committed with the digest at the end: until then
 * nothing is at the target. A block's ID names the image digest, the block size and its index,
 * so blocks an interrupted upload staged (Azure keeps uncommitted blocks for a week) are the
 * same bytes, and only the others are sent; another image's blocks never match.
 */
async function putBlocks(blob: BlockBlobClient, file: string, size: number, sha256: string, o: PutOptions): Promise<{ resumed?: string }> {
  const blockSize = Math.max(BLOCK_MIN, Math.ceil(size / MAX_BLOCKS / 1048576) * 1048576);
  const count = Math.max(1, Math.ceil(size / blockSize));
  // Every ID of a blob must be as long as the others: fixed widths (61 bytes, at most 64 allowed).
  const id = (i: number) => Buffer.from(`vr1${sha256.slice(0, 40)}${blockSize.toString(16).padStart(10, '0')}${i.toString(16).padStart(8, '0')}`).toString('base64');
  const lengthOf = (i: number) => Math.min(blockSize, size - i * blockSize);
  let staged = new Map<string, number>();
  try {
    const list = await blob.getBlockList('uncommitted', { abortSignal: o.signal });
    staged = new Map((list.uncommittedBlocks ?? []).map((b) => [b.name, b.size]));
  } catch (e) {
    if ((e as { statusCode?: number }).statusCode !== 404) throw e;
  }
  // Blocks under IDs of another length (an older version's upload) would refuse ours.
  if ([...staged.keys()].some((k) => k.length !== id(0).length)) {
    // Committing the blob's own blocks again (with its metadata) clears the others and leaves
    // what is there as it was, until this upload commits.
    const committed = await blob.getBlockList('committed', { abortSignal: o.signal }).catch(() => undefined);
    const props = committed?.committedBlocks?.length ? await blob.getProperties({ abortSignal: o.signal }) : undefined;
    await blob.commitBlockList(committed?.committedBlocks?.map((b) => b.name) ?? [], { metadata: props?.metadata, abortSignal: o.signal });
    staged.clear();
  }
  const all = [...Array(count).keys()];
  const todo = all.filter((i) => staged.get(id(i)) !== lengthOf(i));
  let done = all.filter((i) => !todo.includes(i)).reduce((n, i) => n + lengthOf(i), 0);
  o.onProgress?.(done, size);
  const fh = await open(file, 'r');
  try {
    // A few blocks at a time, each read into its own buffer: memory stays at BLOCKS_AT_ONCE blocks.
    let next = 0;
    const worker = async () => {
      while (next < todo.length) {
        const i = todo[next++]!;
        const n = lengthOf(i);
        const buf = Buffer.alloc(n);
        const { bytesRead } = await fh.read(buf, 0, n, i * blockSize);
        if (bytesRead !== n) throw new Error(`${file} changed size while it was uploaded`);
        await blob.stageBlock(id(i), buf, n, { abortSignal: o.signal });
        done += n;
        o.onProgress?.(done, size);
        failpoint('publish-block-staged');
      }
    };
    await Promise.all(Array.from({ length: Math.min(BLOCKS_AT_ONCE, todo.length) }, worker));
  } finally {
    await fh.close();
  }
  await blob.commitBlockList(all.map(id), { metadata: { [DIGEST_KEY]: sha256 }, abortSignal: o.signal });
  return todo.length < count ? { resumed: `${count - todo.length} of ${count} block(s) were staged` } : {};
}

function isZero(b: Buffer): boolean {
  for (let i = 0; i < b.length; i += 8) if (b.readBigUInt64LE(i) !== 0n) return false;
  return true;
}
