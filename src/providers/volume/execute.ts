// Carries out volume actions through libvirt's volume API: create (blank, overlay, import
// with a conversion and upload), resize and chmod in place, delete only the volume recorded.
import { stat } from 'node:fs/promises';
import path from 'node:path';
import { failpoint } from '../../failpoint.js';
import { withTempDir } from '../../tools/scratch.js';
import { buildSeed, currentSeedDigest, seedIdentity } from '../common/cloud-init.js';
import { CommandError } from '../../tools/exec.js';
import { recordKey, type VolumeRecord } from '../../reconcile/inventory.js';
import type { Effect, ExecContext } from '../../reconcile/kind.js';
import type { Action } from '../../reconcile/plan.js';
import { createBlankVolumes, createVolume, deleteVolume, resizeVolume, VOL_FORMAT, wipeVolume, type VolumeBuild } from '../../tools/libvirt-volume.js';
import { refreshPool } from '../../tools/libvirt-pool.js';
import { observeImages } from '../image/observe.js';
import { birthOf, occupant, setPermissions } from '../common/files.js';
import { isRemoteUri } from '../../tools/virsh.js';
import { wipeFile } from '../common/wipe.js';
import { refuseWhileRunning } from '../common/live-use.js';
import type { WipeAlgorithm } from '../../reconcile/model.js';
import { rememberVolume } from '../observe.js';
import type { VolumeOp } from './ops.js';

export async function executeVolume(a: Action, ctx: ExecContext): Promise<Effect> {
  const op = a.op as VolumeOp;
  switch (op.type) {
    case 'volume.create':
    case 'volume.replace': {
      // A seed is built first, before anything is deleted (a build that fails replaces
      // nothing), and recorded by its salted digest; then it is imported as any raw file.
      if (op.build.source.kind === 'seed') {
        const { entries } = op.build.source;
        return withTempDir(async (dir) => {
          const iso = path.join(dir, 'seed.iso');
          const identity = seedIdentity(await currentSeedDigest(entries));
          await buildSeed(iso, entries, ctx.signal);
          const build: VolumeBuild = { ...op.build, capacity: (await stat(iso)).size, source: { kind: 'file', path: iso, driver: 'raw' } };
          const built: VolumeOp = { ...op, build, recorded: { ...op.recorded, source: identity } };
          return executeVolume({ ...a, op: built }, ctx);
        });
      }
      const v = ctx.virsh();
      const b = op.build;
      const key = recordKey({ type: 'volume', pool: b.pool, volume: b.name });
      if (op.incomplete && b.fileBased) {
        // An interrupted build is rebuilt only if the file is still the one it was making:
        // a volume someone made under that name since is not ours to replace.
        const now = await localBirth(ctx, op.incomplete.path);
        if (now !== undefined && op.incomplete.birth !== undefined && op.incomplete.birth !== now) {
          await ctx.inventory.forget(key);
          throw new Error(`${op.incomplete.path} is no longer the volume an interrupted apply was making (another file took its name); forgotten, not replaced`);
        }
      }
      if (op.type === 'volume.replace') {
        if (op.wipeOld) await wipeVolumeData(a.id, ctx, { pool: b.pool, name: b.name, ...op.old }, op.wipeOld);
        await deleteVolume(v, b.pool, b.name);
      }
      await refuseOccupied(op, ctx);
      // Recorded as building before anything exists (an empty key: whatever volume is found
      // under this name later was being made by us), then with its key once libvirt made it;
      // 'ready' only after its contents are complete. A volume left building is rebuilt.
      const rec = buildingRecord(op, v.uri);
      const before = ctx.inventory.get(key);
      await ctx.inventory.set(key, rec);
      const birthIfFile = (p: string) => (b.fileBased ? localBirth(ctx, p) : Promise.resolve(undefined));
      let made: { key: string; path: string } | undefined;
      let obs: Awaited<ReturnType<typeof createVolume>>;
      const create = () =>
        createVolume(v, b, {
          signal: ctx.signal,
          created: async (vol) => {
            made = vol;
            await ctx.inventory.set(key, { ...rec, key: vol.key, path: vol.path, birth: await birthIfFile(vol.path) });
            failpoint('volume-created');
          },
        });
      try {
        // libvirt still lists a volume whose file was deleted behind its back: read the pool again, once.
        obs = await create().catch(async (e: Error) => {
          if (made || !isStale(e)) throw e;
          await refreshPool(v, b.pool);
          return create();
        });
      } catch (e) {
        // createVolume leaves no volume of ours behind when it fails (creation failed — the
        // name may be someone else's — or an import deleted its half-made volume): forget the
        // intent, or a volume someone makes under that name later would be taken for ours.
        // Only a kill -9 leaves the intent, and the next apply rebuilds.
        if (before && op.type === 'volume.create' && !made) await ctx.inventory.set(key, before);
        else await ctx.inventory.forget(key);
        throw e;
      }
      await rememberVolume(ctx.cache, obs);
      const ready: VolumeRecord = { ...rec, key: obs.key, path: obs.path, status: 'ready', birth: await birthIfFile(obs.path) };
      await ctx.inventory.set(key, ready);
      // qcow2 options live only in the file: read it once now, so later plans find it cached.
      if (headerDeclared(b)) await observeImages([obs.path], ctx.cache);
      if (obs.capacity < b.capacity) throw new Error(`${a.id}: volume has ${obs.capacity} bytes, expected ${b.capacity}`);
      return { record: [key, ready] };
    }
    case 'volume.update': {
      if (op.resize) await resizeVolume(ctx.virsh(), op.pool, op.name, op.resize.capacity, op.resize.allocate);
      if (op.chmod) await setPermissions(op.chmod.path, op.chmod.permissions);
      const rec = op.inventoryKey ? ctx.inventory.get(op.inventoryKey) : undefined;
      if (op.wipe !== undefined && rec?.type === 'volume') return { record: [op.inventoryKey!, { ...rec, wipe: op.wipe === 'none' ? undefined : op.wipe }] };
      return undefined;
    }
    case 'volume.delete': {
      // The key of a file volume is its path, which a new file can take: check the birth time.
      const now = op.birth && op.path ? await localBirth(ctx, op.path) : undefined;
      if (op.exists && op.birth && op.birth !== '0' && now !== undefined && now !== op.birth) {
        ctx.log(`${a.id}: not deleted: ${op.path} is no longer the file reconcile created; forgotten`);
      } else if (op.exists) {
        await refuseWhileRunning(ctx.virsh(), { path: op.path, pool: op.pool, volume: op.name }, `volume ${op.name} in pool ${op.pool}`);
        if (op.wipe) await wipeVolumeData(a.id, ctx, { pool: op.pool, name: op.name, path: op.path, birth: op.birth }, op.wipe);
        await deleteVolume(ctx.virsh(), op.pool, op.name);
      }
      return { forget: op.inventoryKey };
    }
  }
}

type CreateOp = Extract<VolumeOp, { build: VolumeBuild }>;

/**
 * Blank volumes of a file pool, created together (one virsh process for the group, see
 * createBlankVolumes): a create that made nothing and rebuilds nothing qualifies.
 */
export function batchKey(a: Action): string | undefined {
  const op = a.op as VolumeOp;
  return op.type === 'volume.create' && op.build.source.kind === 'blank' && op.build.fileBased && !op.build.encryption && !op.incomplete ? op.build.pool : undefined;
}

/**
 * Creates a group of blank file volumes with the crash safety of one: each volume's intent
 * (building, with the path it will have and the time) is saved just before its create is
 * sent, and what that create did — made (its path and birth time) or failed (the intent
 * dropped again) — is saved with the next one's intent. So at any moment at most one volume
 * of the group is ambiguous, born within moments of its intent, exactly as for a volume
 * created alone; none is recorded before its create starts. Shutting down stops the group
 * between two creates: the rest are not started.
 */
export async function createBlankMany(all: Action[], ctx: ExecContext): Promise<(Effect | Error)[]> {
  // Those whose path is taken (by something libvirt does not list) fail alone, untried.
  const taken = await Promise.all(
    all.map((a) =>
      refuseOccupied(a.op as CreateOp, ctx).then(
        () => undefined,
        (e: Error) => e,
      ),
    ),
  );
  const actions = all.filter((_, i) => !taken[i]);
  const first = actions.length ? await createFree(actions, ctx) : [];
  // A volume whose file was deleted behind libvirt's back is still in its list until the pool is
  // read again: read it, and those are made one by one.
  const stale = actions.filter((_, i) => isStale(first[i]));
  if (stale.length) {
    for (const pool of new Set(stale.map((a) => (a.op as CreateOp).build.pool))) await refreshPool(ctx.virsh(), pool).catch(() => undefined);
    for (const [i, a] of actions.entries()) if (isStale(first[i])) first[i] = await executeVolume(a, ctx).catch((e: Error) => e);
  }
  const made = first;
  return taken.map((e) => e ?? made.shift()!);
}

/** libvirt's refusal of a volume it still lists though its file is gone. */
const isStale = (r: Effect | Error | undefined) => r instanceof Error && /exists already/.test(r.message);

async function createFree(actions: Action[], ctx: ExecContext): Promise<(Effect | Error)[]> {
  const v = ctx.virsh();
  const ops = actions.map((a) => a.op as CreateOp);
  const keys = ops.map((op) => recordKey({ type: 'volume', pool: op.build.pool, volume: op.build.name }));
  const before = keys.map((k) => ctx.inventory.get(k));
  // Each volume's record as it goes: its intent (made just before its create), then what it made.
  const recs: VolumeRecord[] = [];
  const restore = (i: number) => (before[i] ? ctx.inventory.set(keys[i]!, before[i]!) : ctx.inventory.forget(keys[i]!));
  // Each step's result, saved with the next intent at the latest; all of them before returning.
  const saving: Promise<void>[] = [];
  const outcomes = await createBlankVolumes(
    v,
    ops.map((op) => op.build),
    {
      before: async (i) => {
        if (ctx.signal?.aborted) return false;
        recs[i] = buildingRecord(ops[i]!, v.uri);
        await ctx.inventory.set(keys[i]!, recs[i]!);
        if (i > 0) failpoint('volume-group-step');
        return true;
      },
      after: async (i, error) => {
        const p = ops[i]!.expectedPath;
        if (error) saving.push(restore(i));
        else if (p) {
          failpoint('volume-made');
          const birth = await localBirth(ctx, p);
          if (birth !== undefined) {
            recs[i] = { ...recs[i]!, key: p, path: p, birth };
            saving.push(ctx.inventory.set(keys[i]!, recs[i]!));
          }
        }
      },
    },
  );
  await Promise.all(saving);
  const headers: string[] = [];
  const out = await Promise.all(
    outcomes.map(async (o, i): Promise<Effect | Error> => {
      if (!o.ok) return 'notRun' in o ? new CommandError(['virsh', 'vol-create'], 'not started (shutting down)', undefined, '', true) : new Error(o.error);
      const obs = o.volume;
      await rememberVolume(ctx.cache, obs);
      const ready: VolumeRecord = { ...recs[i]!, key: obs.key, path: obs.path, status: 'ready', birth: recs[i]!.birth ?? (await localBirth(ctx, obs.path)) };
      const b = ops[i]!.build;
      if (headerDeclared(b)) headers.push(obs.path);
      if (obs.capacity < b.capacity) {
        await ctx.inventory.set(keys[i]!, ready);
        return new Error(`${actions[i]!.id}: volume has ${obs.capacity} bytes, expected ${b.capacity}`);
      }
      return { record: [keys[i]!, ready] };
    }),
  );
  if (headers.length) await observeImages(headers, ctx.cache);
  return out;
}

function buildingRecord(op: CreateOp, uri: string): VolumeRecord {
  return {
    type: 'volume',
    name: op.imageName,
    pool: op.build.pool,
    volume: op.build.name,
    key: '',
    path: op.expectedPath ?? '',
    status: 'building',
    // Wall-clock nanoseconds, as file birth times are: a file born right after this at the
    // expected path is the one vol-create made (see volumeIsOurs).
    since: String(BigInt(Date.now()) * 1_000_000n),
    making: { capacity: op.build.capacity, format: op.build.fileBased ? VOL_FORMAT[op.build.format] : undefined },
    createdAt: new Date().toISOString(),
    recorded: op.recorded,
    wipe: op.wipe,
    uri,
  };
}

/** libvirt does not report qcow2 options: a file volume that declares them has its header read (by qemu-img). */
export function headerDeclared(b: Pick<VolumeBuild, 'fileBased' | 'format' | 'qcow2'>): boolean {
  const q = b.qcow2;
  return b.fileBased && b.format === 'qcow2' && !!q && (q.clusterSize !== undefined || q.lazyRefcounts !== undefined || q.compat !== undefined);
}

/** Throws if something libvirt does not list is at the path a file volume is about to take. */
async function refuseOccupied(op: CreateOp, ctx: ExecContext): Promise<void> {
  // On another host, libvirt says so itself: a file there under that name is a volume of the refreshed pool.
  const p = op.build.fileBased && !isRemoteUri(ctx.virsh().uri) ? op.expectedPath : undefined;
  const what = p ? await occupant(p) : undefined;
  if (what) throw new Error(`${p} is already taken by ${what}; the volume is not created over it (nor through a symlink)`);
}

/**
 * Overwrites a volume's data before it is deleted. A file volume (its birth time recorded) is
 * wiped by reconcile through a descriptor (see wipeFile: never through a symlink swapped in,
 * never data another hard link reaches, and really overwritten where libvirt's zero wipe of a
 * sparse file only deallocates); a block volume (an LV, a partition) by libvirt's vol-wipe.
 * Anything but a wipe (or a file that is not reconcile's) keeps the volume: it is not deleted.
 */
async function wipeVolumeData(id: string, ctx: ExecContext, vol: { pool: string; name: string; path?: string; birth?: string }, algorithm: WipeAlgorithm): Promise<void> {
  if (!vol.birth || vol.birth === '0' || !vol.path) {
    await wipeVolume(ctx.virsh(), vol.pool, vol.name, algorithm);
    return;
  }
  const done = await wipeFile(vol.path, { birth: vol.birth }, algorithm, ctx.signal);
  if (done === 'linked') ctx.log(`${id}: not wiped: ${vol.path} has another hard link, which still reaches its data (only this name is removed)`);
  if (done === 'not-ours') throw new Error(`${vol.path} is not the file reconcile made (or is a symlink now); it is neither wiped nor deleted`);
}

/**
 * A file volume's birth time, which tells the file reconcile made from one that took its name;
 * none for a volume on another host (the file of that name here is not it).
 */
function localBirth(ctx: ExecContext, p: string): Promise<string | undefined> {
  return isRemoteUri(ctx.virsh().uri) ? Promise.resolve(undefined) : birthOf(p);
}
