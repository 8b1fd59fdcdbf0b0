// Carries out image actions: build in private scratch and publish (create, replace), grow
// and chmod in place (update), delete only the very files recorded (delete).
import { failpoint } from '../../failpoint.js';
import { recordKey, type ImageRecord, type InventoryRecord } from '../../reconcile/inventory.js';
import type { Effect, ExecContext } from '../../reconcile/kind.js';
import type { Action } from '../../reconcile/plan.js';
import { resize } from '../../tools/qemu-img.js';
import { checkStillSame, identitiesOf, removeEmptyDirs, removeIfSame, setPermissions } from '../common/files.js';
import { wipeFile } from '../common/wipe.js';
import { refuseWhileRunning } from '../common/live-use.js';
import { currentSeedDigest, seedIdentity } from '../common/cloud-init.js';
import { rm } from 'node:fs/promises';
import * as qemuImg from '../../tools/qemu-img.js';
import { createImage, deleteImage, prepareBuild, publishBuild, removeStaleBuilds, type BuildHooks, type ImageBuild, type Scratch } from './build.js';
import { driverFor, sizeTolerance } from './formats.js';
import { observeImages, type ObservedImage } from './observe.js';
import type { ImageOp } from './ops.js';

export async function executeImage(a: Action, ctx: ExecContext): Promise<Effect> {
  const op = a.op as ImageOp;
  switch (op.type) {
    case 'image.create':
    case 'image.replace': {
      // A seed is recorded by the salted digest of its files as the build reads them.
      const build = op.build.source.kind === 'seed' ? { ...op, recorded: { ...op.recorded, source: seedIdentity(await currentSeedDigest(op.build.source.entries)) } } : op;
      const prior = await beforeBuild(a, ctx);
      const hooks = buildHooks(a, ctx, build);
      // A directory is recorded by what mkfs read, which may differ from what the plan saw.
      hooks.onSourceRecorded = (identity) => {
        build.recorded = { ...build.recorded, source: identity };
      };
      const made = await createImage(build.build, hooks);
      failpoint('image-after-publish');
      const obs = (await observeImages([build.build.path], ctx.cache)).get(build.build.path);
      return afterPublish(a, ctx, build, prior, made, obs ?? undefined);
    }
    case 'image.update': {
      // Only the file the plan saw: one swapped in since (or a symlink) is never resized or chmod'ed.
      await checkStillSame(op.path, op.expect, op.followSymlink);
      if (op.resize) await resize(op.path, op.format, op.resize.size, op.resize);
      if (op.permissions) await setPermissions(op.path, op.permissions, { expect: op.expect, followSymlink: op.followSymlink });
      await observeImages([op.path], ctx.cache);
      if (op.wipe !== undefined) {
        const k = recordKey({ type: 'image', path: op.path });
        const rec = ctx.inventory.get(k);
        if (rec?.type === 'image') return { record: [k, { ...rec, wipe: op.wipe === 'none' ? undefined : op.wipe }] };
      }
      return undefined;
    }
    case 'image.delete': {
      if (op.exists) await refuseWhileRunning(ctx.virsh(), { path: op.path }, op.path);
      // Overwritten first, through a descriptor checked to be the file recorded; a file that is
      // not (it took the name since) is neither wiped nor deleted below.
      if (op.exists && op.wipe) {
        const files = [{ path: op.path, ...op.identity }, ...op.extents];
        for (const f of files) {
          const done = await wipeFile(f.path, f, op.wipe, ctx.signal);
          if (done === 'not-ours') ctx.log(`${a.id}: not wiped: ${f.path} is not the file reconcile made`);
          if (done === 'linked') ctx.log(`${a.id}: not wiped: ${f.path} has another hard link, which still reaches its data (only this name is removed)`);
        }
      }
      if (op.exists) {
        for (const f of await deleteImage(op.path, op.identity, op.extents))
          ctx.log(`${a.id}: kept ${f}: not the file reconcile made (another file took its place since the plan)`);
      }
      // What a killed build left: its private build directory, and extents renamed in before the kill.
      for (const stale of await removeStaleBuilds(op.path)) ctx.log(`${a.id}: removed ${stale}, left by an interrupted apply`);
      await removeIfSame((op.pendingExtents ?? []).filter((e) => e.path !== op.path));
      // The directories made for it go too, if nothing else is in them: now, and again once
      // every action has ended (the other images in them may be deleted in parallel).
      await removeEmptyDirs(op.dirs ?? []);
      tidyAtEnd(ctx, op.dirs ?? []);
      return { forget: op.inventoryKey };
    }
  }
}

type BuildOp = Extract<ImageOp, { type: 'image.create' | 'image.replace' }>;

/** What a build finds first: leftovers of an interrupted one removed; the record it had. */
async function beforeBuild(a: Action, ctx: ExecContext): Promise<InventoryRecord | undefined> {
  const op = a.op as BuildOp;
  for (const stale of await removeStaleBuilds(op.build.path)) ctx.log(`${a.id}: removed ${stale}, left by an interrupted apply`);
  // A build that was killed while publishing (extents renamed in, descriptor not yet):
  // its extents are recorded as pending with their identity; they are ours to remove.
  const prior = ctx.inventory.get(recordKey({ type: 'image', path: op.build.path }));
  if (prior?.type === 'image' && prior.pending?.extents.length) {
    await removeIfSame(prior.pending.extents.filter((e) => e.path !== op.build.path));
  }
  return prior;
}

function buildHooks(a: Action, ctx: ExecContext, op: BuildOp): BuildHooks {
  const k = recordKey({ type: 'image', path: op.build.path });
  const name = a.id.replace(/^images\./, '');
  return {
    signal: ctx.signal,
    sources: { id: a.id, stateDir: ctx.stateDir, progress: ctx.progress, signal: ctx.signal, log: ctx.log },
    replaces: op.type === 'image.replace' ? { ...op.oldFile, extents: op.oldExtents } : undefined,
    // Intent first (Crossplane's "create pending"): a crash between the rename and the
    // record below still leaves the published file recognisably ours.
    beforePublish: async (id) => {
      const prev = ctx.inventory.get(k);
      const pending = { ...id, recorded: op.recorded, createdAt: new Date().toISOString() };
      await ctx.inventory.set(
        k,
        prev?.type === 'image'
          ? { ...prev, name, pending }
          : { type: 'image', name, path: op.build.path, ino: 0, dev: 0, birth: '0', extents: [], createdAt: pending.createdAt, recorded: op.recorded, pending },
      );
      failpoint('image-before-publish');
    },
  };
}

/** The published image, as observed: recorded with its identity, then checked against the build. */
async function afterPublish(a: Action, ctx: ExecContext, op: BuildOp, prior: InventoryRecord | undefined, made: string[], obs: ObservedImage | undefined): Promise<Effect> {
  if (!obs) throw new Error(`${op.build.path} is missing after it was built`);
  if (op.type === 'image.replace') {
    // Old extents the new image did not take over go, if reconcile made them and they are still those files.
    const keep = new Set(obs.vmdk?.extents ?? []);
    await removeIfSame(op.ownedExtents.filter((e) => !keep.has(e.path) && e.path !== op.build.path));
  }
  const k = recordKey({ type: 'image', path: op.build.path });
  const rec: ImageRecord = {
    type: 'image',
    name: a.id.replace(/^images\./, ''),
    path: op.build.path,
    ino: obs.file.ino,
    dev: obs.file.dev,
    birth: obs.file.birth,
    extents: await identitiesOf(obs.vmdk?.extents ?? []),
    createdAt: new Date().toISOString(),
    recorded: op.recorded,
    wipe: op.wipe,
    // A replace keeps the directories the image had.
    dirs: op.type === 'image.create' ? [...(op.dirs ?? []), ...made] : prior?.type === 'image' ? prior.dirs : undefined,
  };
  await ctx.inventory.set(k, rec);
  verify(a.id, obs, op.build);
  return { record: [k, rec] };
}

/**
 * Blank unencrypted images that qemu-img makes in moments, in one file each: created together
 * (qemuImg.createMany: one shell process for the group instead of one process each). Long or
 * secret work (imports, overlays, preallocated or encrypted images) goes alone, cancellable.
 */
export function imageBatchKey(a: Action): string | undefined {
  const op = a.op as ImageOp;
  if (op.type !== 'image.create') return undefined;
  const b = op.build;
  if (b.source.kind !== 'blank' || b.encryption || b.qcow2?.preallocation === 'full') return undefined;
  if (b.format === 'vmdk' && b.vmdk?.subformat && b.vmdk.subformat !== 'monolithicSparse' && b.vmdk.subformat !== 'streamOptimized') return undefined;
  if (b.format === 'vhdx' && b.vhdx?.subformat === 'fixed') return undefined;
  return 'blank';
}

/** A group of imageBatchKey's images: each step as for one image, each with its own outcome. */
export async function createBlankImages(actions: Action[], ctx: ExecContext): Promise<(Effect | Error)[]> {
  const ops = actions.map((a) => a.op as BuildOp);
  const outcome: (Effect | Error | undefined)[] = actions.map(() => undefined);
  const fail = (i: number) => (e: unknown) => {
    outcome[i] = e instanceof Error ? e : new Error(String(e));
  };
  const prior: (InventoryRecord | undefined)[] = [];
  const scratch: (Scratch | undefined)[] = [];
  await Promise.all(
    actions.map((a, i) =>
      (async () => {
        prior[i] = await beforeBuild(a, ctx);
        scratch[i] = await prepareBuild(ops[i]!.build);
      })().catch(fail(i)),
    ),
  );
  const ready = ops.flatMap((_, i) => (scratch[i] && !outcome[i] ? [i] : []));
  const made: string[][] = [];
  try {
    const errors = await qemuImg.createMany(ready.map((i) => ({ target: scratch[i]!.file, spec: { ...ops[i]!.build, encryption: undefined } })));
    await Promise.all(
      ready.map(async (i, k) => {
        if (errors[k]) return fail(i)(new Error(errors[k]));
        await publishBuild(ops[i]!.build, scratch[i]!, buildHooks(actions[i]!, ctx, ops[i]!)).then(() => {
          made[i] = scratch[i]!.made;
        }, fail(i));
      }),
    );
  } finally {
    await Promise.all(scratch.map((s) => (s ? rm(s.dir, { recursive: true, force: true }) : undefined)));
  }
  failpoint('image-after-publish');
  const published = ops.flatMap((op, i) => (made[i] ? [op.build.path] : []));
  const unreadable = new Map<string, string>();
  const obs = await observeImages(published, ctx.cache, unreadable);
  await Promise.all(
    ops.map(async (op, i) => {
      if (!made[i]) return;
      const why = unreadable.get(op.build.path);
      if (why) return fail(i)(new Error(why));
      outcome[i] = await afterPublish(actions[i]!, ctx, op, prior[i], made[i]!, obs.get(op.build.path) ?? undefined).catch((e: Error) => e);
    }),
  );
  return outcome.map((o) => o ?? new Error('not built'));
}

// Directories of deleted images, per apply: removed at its end, innermost first, if empty.
const emptied = new WeakMap<ExecContext, Set<string>>();
function tidyAtEnd(ctx: ExecContext, dirs: string[]): void {
  let all = emptied.get(ctx);
  if (!all) {
    const set = new Set<string>();
    all = set;
    emptied.set(ctx, set);
    ctx.atEnd(() =>
      removeEmptyDirs(
        [...set].sort((a, b) => a.length - b.length),
        { each: true },
      ),
    );
  }
  for (const d of dirs) all.add(d);
}

/** After a build, the image must be what was asked for; anything else is a bug worth stopping on. */
function verify(id: string, obs: { driver: string; virtualSize: number }, build: ImageBuild): void {
  const want = driverFor(build.format, !!build.encryption);
  if (obs.driver !== want) throw new Error(`${id}: built as ${obs.driver}, expected ${want}`);
  if (build.size !== undefined && (obs.virtualSize < build.size || obs.virtualSize - build.size >= sizeTolerance(build.format))) {
    throw new Error(`${id}: built with virtual size ${obs.virtualSize}, expected ${build.size}`);
  }
}
