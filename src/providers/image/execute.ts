// Carries out image actions: build in private scratch and publish (create, replace), grow
// and chmod in place (update), delete only the very files recorded (delete).
import { failpoint } from '../../failpoint.js';
import { recordKey, type ImageRecord } from '../../reconcile/inventory.js';
import type { Effect, ExecContext } from '../../reconcile/kind.js';
import type { Action } from '../../reconcile/plan.js';
import { resize } from '../../tools/qemu-img.js';
import { checkStillSame, identitiesOf, removeEmptyDirs, removeIfSame, setPermissions } from '../common/files.js';
import { createImage, deleteImage, removeStaleBuilds, type ImageBuild } from './build.js';
import { driverFor, sizeTolerance } from './formats.js';
import { observeImages } from './observe.js';
import type { ImageOp } from './ops.js';

export async function executeImage(a: Action, ctx: ExecContext): Promise<Effect> {
  const op = a.op as ImageOp;
  switch (op.type) {
    case 'image.create':
    case 'image.replace': {
      for (const stale of await removeStaleBuilds(op.build.path)) ctx.log(`${a.id}: removed ${stale}, left by an interrupted apply`);
      const k = recordKey({ type: 'image', path: op.build.path });
      const replaces = op.type === 'image.replace' ? { ...op.oldFile, extents: op.oldExtents } : undefined;
      // A build that was killed while publishing (extents renamed in, descriptor not yet):
      // its extents are recorded as pending with their identity; they are ours to remove.
      const prior = ctx.inventory.get(k);
      if (prior?.type === 'image' && prior.pending?.extents.length) {
        await removeIfSame(prior.pending.extents.filter((e) => e.path !== op.build.path));
      }
      const name = a.id.replace(/^images\./, '');
      // Intent first (Crossplane's "create pending"): a crash between the rename and the
      // record below still leaves the published file recognisably ours.
      const made = await createImage(op.build, {
        signal: ctx.signal,
        replaces,
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
      });
      failpoint('image-after-publish');
      const obs = (await observeImages([op.build.path], ctx.cache)).get(op.build.path);
      if (!obs) throw new Error(`${op.build.path} is missing after it was built`);
      if (op.type === 'image.replace') {
        // Old extents the new image did not take over go, if reconcile made them and they are still those files.
        const keep = new Set(obs.vmdk?.extents ?? []);
        await removeIfSame(op.ownedExtents.filter((e) => !keep.has(e.path) && e.path !== op.build.path));
      }
      const rec: ImageRecord = {
        type: 'image',
        name,
        path: op.build.path,
        ino: obs.file.ino,
        dev: obs.file.dev,
        birth: obs.file.birth,
        extents: await identitiesOf(obs.vmdk?.extents ?? []),
        createdAt: new Date().toISOString(),
        recorded: op.recorded,
        // A replace keeps the directories the image had.
        dirs: op.type === 'image.create' ? [...(op.dirs ?? []), ...made] : prior?.type === 'image' ? prior.dirs : undefined,
      };
      await ctx.inventory.set(k, rec);
      verify(a.id, obs, op.build);
      return { record: [k, rec] };
    }
    case 'image.update': {
      // Only the file the plan saw: one swapped in since (or a symlink) is never resized or chmod'ed.
      await checkStillSame(op.path, op.expect, op.followSymlink);
      if (op.resize) await resize(op.path, op.format, op.resize.size, op.resize);
      if (op.permissions) await setPermissions(op.path, op.permissions, { expect: op.expect, followSymlink: op.followSymlink });
      await observeImages([op.path], ctx.cache);
      return undefined;
    }
    case 'image.delete': {
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
