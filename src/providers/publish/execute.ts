// Uploads and deletes of published images. An upload reads the file's digest as it is now
// (the plan's may be of an image rebuilt since), looks at the target again (whose it is, by
// the same rule as the plan), and uploads only if it does not already hold this image; each
// outcome (and a failure) is recorded. Only a record of an upload makes an object reconcile's.
import { stat } from 'node:fs/promises';
import type { Effect, ExecContext } from '../../reconcile/kind.js';
import type { PublishRecord } from '../../reconcile/inventory.js';
import type { Action } from '../../reconcile/plan.js';
import { errorText, openPlace } from '../../publish/place.js';
import { sha256File } from '../../file-sha256.js';
import type { PublishOp } from './ops.js';
import { whose } from './ownership.js';

export async function executePublish(a: Action, ctx: ExecContext): Promise<Effect> {
  const op = a.op as PublishOp;
  const target = { ...op.target, origin: '' };
  if (op.type === 'publish.delete') {
    if (op.sha256) {
      const place = await openPlace(target);
      const now = await place.head();
      if (now && now.sha256 === op.sha256) await place.remove();
      else if (now) ctx.log(`${a.id}: not deleted: the object holds another upload than reconcile's last (sha256 ${now.sha256 ?? 'none'}); only forgotten`);
    }
    return { forget: op.inventoryKey };
  }
  const stored = ctx.inventory.get(op.inventoryKey);
  const prev = stored?.type === 'publish' ? stored : undefined;
  const size = (await stat(op.path)).size;
  const hashing = ctx.progress.begin(a.id, 'hashing');
  let sha256: string;
  try {
    sha256 = await sha256File(op.path, (d) => hashing.update(d, size));
  } finally {
    hashing.end();
  }
  // What the record keeps of earlier uploads: the last one completed, and one under way.
  const record = (extra: Partial<PublishRecord>): PublishRecord => ({
    type: 'publish',
    to: op.target.to,
    image: op.image,
    path: op.path,
    target: op.target,
    prune: op.target.prune,
    sha256: prev?.sha256,
    uploadedAt: prev?.uploadedAt,
    upload: prev?.upload,
    ...extra,
  });
  try {
    const place = await openPlace(target);
    const now = await place.head();
    if (now?.sha256 === sha256) {
      ctx.log(`${a.id}: already holds this image (sha256 ${sha256.slice(0, 12)}…); nothing uploaded`);
      // Recorded as reconcile's only if it was: someone else's copy of the same image stays theirs.
      return now.sha256 === prev?.sha256 || now.sha256 === prev?.upload?.sha256
        ? { record: [op.inventoryKey, record({ sha256, upload: undefined, lastError: undefined })] }
        : prev
          ? { record: [op.inventoryKey, record({ lastError: undefined })] }
          : undefined;
    }
    const owner = now ? whose(now, prev, op.target) : 'ours';
    if (typeof owner === 'object') throw new Error(owner.notOurs);
    // An interrupted upload of this very image goes on (the place checks that its half is still there).
    const resume = prev?.upload?.sha256 === sha256 && (owner === 'our-half' || !target.pageBlob) ? prev.upload : undefined;
    // Intent first: an upload killed half-way (a page blob exists from its first page on) leaves
    // an object without the digest, which only this record tells from someone else's.
    await ctx.inventory.set(op.inventoryKey, record({ upload: resume ?? { sha256 } }));
    const task = ctx.progress.begin(a.id, 'uploading');
    let put: { resumed?: string } | undefined;
    try {
      put = await place.put(op.path, sha256, {
        signal: ctx.signal,
        onProgress: (d, t) => task.update(d, t),
        resume,
        onCheckpoint: (state) => ctx.inventory.set(op.inventoryKey, record({ upload: { sha256, ...state } })),
      });
    } finally {
      task.end();
    }
    if (put?.resumed) ctx.log(`${a.id}: resumed the interrupted upload (${put.resumed})`);
    else if (resume?.offset || resume?.parts?.length)
      ctx.log(`${a.id}: resumed the interrupted upload (${resume.offset !== undefined ? `at ${resume.offset} bytes` : `${resume.parts!.length} part(s) were sent`})`);
    ctx.log(`${a.id}: uploaded ${op.path} (${size} bytes, sha256 ${sha256.slice(0, 12)}…)`);
    return { record: [op.inventoryKey, record({ sha256, uploadedAt: new Date().toISOString(), upload: undefined, lastError: undefined })] };
  } catch (e) {
    // Remembered for `show` (failed); the upload's last checkpoint (read back: the last one
    // written) stays for the next apply. A failure alone makes nothing reconcile's.
    const now = ctx.inventory.get(op.inventoryKey);
    await ctx.inventory.set(
      op.inventoryKey,
      record({ upload: now?.type === 'publish' ? now.upload : undefined, lastError: { at: new Date().toISOString(), message: errorText(e) } }),
    );
    throw (e as Error).message ? e : new Error(errorText(e));
  }
}
