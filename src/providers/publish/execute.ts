// Uploads and deletes of published images. An upload reads the file's digest as it is now
// (the plan's may be of an image rebuilt since), looks at the target again, and uploads only
// if it does not already hold this image; each outcome (and a failure) is recorded.
import type { Effect, ExecContext } from '../../reconcile/kind.js';
import type { PublishRecord } from '../../reconcile/inventory.js';
import type { Action } from '../../reconcile/plan.js';
import { openPlace } from '../../publish/place.js';
import { sha256File } from '../../sources/cache.js';
import { stat } from 'node:fs/promises';
import type { PublishOp } from './ops.js';

export async function executePublish(a: Action, ctx: ExecContext): Promise<Effect> {
  const op = a.op as PublishOp;
  const target = { ...op.target, origin: '' };
  const place = await openPlace(target);
  if (op.type === 'publish.delete') {
    if (op.sha256) {
      const now = await place.head();
      if (now && now.sha256 === op.sha256) await place.remove();
      else if (now) ctx.log(`${a.id}: not deleted: the object holds another upload than reconcile's last (sha256 ${now.sha256 ?? 'none'})`);
    }
    return { forget: op.inventoryKey };
  }
  const prev = ctx.inventory.get(op.inventoryKey);
  const size = (await stat(op.path)).size;
  const hashing = ctx.progress.begin(a.id, 'hashing');
  let sha256: string;
  try {
    sha256 = await sha256File(op.path, (d) => hashing.update(d, size));
  } finally {
    hashing.end();
  }
  const record = (extra: Partial<PublishRecord>): PublishRecord => ({
    type: 'publish',
    to: op.target.to,
    image: op.image,
    path: op.path,
    target: op.target,
    prune: op.target.prune,
    sha256,
    uploadedAt: prev?.type === 'publish' ? prev.uploadedAt : new Date().toISOString(),
    ...extra,
  });
  try {
    const now = await place.head();
    if (now?.sha256 === sha256) {
      ctx.log(`${a.id}: already holds this image (sha256 ${sha256.slice(0, 12)}…); nothing uploaded`);
      return { record: [op.inventoryKey, record({})] };
    }
    if (now && !now.sha256 && prev?.type !== 'publish') throw new Error(`an object reconcile did not publish is at ${op.target.to} now; it is left alone`);
    // Intent first: an upload killed half-way (a page blob exists from its first page on) leaves
    // an object without the digest, which only this record tells from someone else's.
    await ctx.inventory.set(op.inventoryKey, record({ sha256: prev?.type === 'publish' ? prev.sha256 : undefined, upload: prev?.type === 'publish' ? prev.upload : undefined }));
    const task = ctx.progress.begin(a.id, 'uploading');
    const resume = prev?.type === 'publish' ? prev.upload : undefined;
    try {
      await place.put(op.path, sha256, {
        signal: ctx.signal,
        onProgress: (d, t) => task.update(d, t),
        resume,
        onCheckpoint: (offset) => ctx.inventory.set(op.inventoryKey, record({ sha256: prev?.type === 'publish' ? prev.sha256 : undefined, upload: { sha256, offset } })),
      });
    } finally {
      task.end();
    }
    if (resume?.sha256 === sha256) ctx.log(`${a.id}: resumed the upload interrupted at ${resume.offset} bytes`);
    ctx.log(`${a.id}: uploaded ${op.path} (${size} bytes, sha256 ${sha256.slice(0, 12)}…)`);
    return { record: [op.inventoryKey, record({ uploadedAt: new Date().toISOString(), lastError: undefined, upload: undefined })] };
  } catch (e) {
    // Remembered for `show` (failed), whatever the next plan finds; the upload's last checkpoint
    // (read back: the last one written) stays for the next apply to resume from.
    const now = ctx.inventory.get(op.inventoryKey);
    await ctx.inventory.set(
      op.inventoryKey,
      record({
        sha256: prev?.type === 'publish' ? prev.sha256 : undefined,
        upload: now?.type === 'publish' ? now.upload : undefined,
        lastError: { at: new Date().toISOString(), message: (e as Error).message },
      }),
    );
    throw e;
  }
}
