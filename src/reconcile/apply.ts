// Executes exactly the actions of a plan: dependencies first, independent actions in
// parallel (bounded), the inventory saved after every action so a crash loses nothing.
import { stat } from 'node:fs/promises';
import path from 'node:path';
import pLimit from 'p-limit';
import {
  checkStillSame, createImage, deleteImage, driverFor, identitiesOf, observeImages, removeIfSame, removeStaleBuilds, resizeImage, setPermissions, sizeTolerance,
  type ObservationCache,
} from '../providers/image/files.js';
import {
  buildPool, definePool, deletePoolStorage, ensureSecret, parsePoolXml, setAutostart, startPool, stopPool, undefinePool,
} from '../tools/libvirt-pool.js';
import { changeDisk, defineDomain, setOwnership, undefineDomain } from '../tools/libvirt-domain.js';
import { createVolume, deleteVolume, resizeVolume } from '../tools/libvirt-volume.js';
import { CommandError } from '../tools/exec.js';
import { removeAbandonedScratch, useScratchRoot } from '../providers/common/scratch.js';
import type { Virsh } from '../tools/virsh.js';
import { UserError } from './errors.js';
import { failpoint } from '../failpoint.js';
import { rememberVolume } from './observe.js';
import { readInventory, recordKey, writeInventory, type ImageRecord, type VolumeRecord } from './inventory.js';
import type { Action, ActionKind, Plan } from './plan.js';

export interface ApplyOptions {
  stateDir: string;
  parallelism: number;
  cache?: ObservationCache;
  /** the libvirt connection, opened only when the plan has pool or volume actions */
  virsh?: () => Virsh;
  log: (line: string) => void;
  /**
   * Once aborted, no further action starts. Actions in flight: a build in private scratch
   * space (image create/replace, a volume import's conversion and upload) is cancelled — its
   * qemu-img is terminated and its files removed, and the next apply builds it again; every
   * other action (libvirt calls, in-place resizes, permission changes, deletes) is short and
   * would leave its object half-changed if stopped, so it finishes.
   */
  signal?: AbortSignal;
}

/** skipped: a dependency did not complete; not-started: shutting down; cancelled: stopped in flight */
export type ActionStatus = 'done' | 'failed' | 'skipped' | 'not-started' | 'cancelled';

export interface ActionResult {
  id: string;
  kind: ActionKind;
  status: ActionStatus;
  seconds: number;
  error?: string;
}

export interface ApplyResult {
  results: ActionResult[];
  counts: Record<'created' | 'updated' | 'replaced' | 'deleted' | 'failed' | 'cancelled' | 'notStarted', number>;
}

const VERB: Record<ActionKind, [string, string]> = {
  create: ['creating', 'created'],
  update: ['updating', 'updated'],
  replace: ['replacing', 'replaced'],
  delete: ['deleting', 'deleted'],
  'no-op': ['', ''],
};

export async function applyPlan(plan: Plan, opts: ApplyOptions): Promise<ApplyResult> {
  if (plan.refusals.length) throw new UserError(`the plan has ${plan.refusals.length} refused change(s); nothing was applied`);
  const todo = plan.actions.filter((a) => a.kind !== 'no-op');
  let client: Virsh | undefined;
  const virsh = () => {
    if (!opts.virsh) throw new Error('this plan needs a libvirt connection');
    return (client ??= opts.virsh());
  };
  const inventory = await readInventory(opts.stateDir);
  // Scratch space of this apply lives in the state directory, where the next apply (holding
  // the same lock) finds and removes what a killed one left.
  const scratch = path.join(opts.stateDir, 'scratch');
  useScratchRoot(scratch);
  for (const d of await removeAbandonedScratch(scratch)) opts.log(`removed ${d}, scratch space left by an interrupted apply`);
  const save = coalescedWriter(() => writeInventory(opts.stateDir, inventory));
  const limit = pLimit(Math.max(1, opts.parallelism));
  const results = new Map<string, ActionResult>();
  const running = new Map<string, Promise<ActionResult>>();
  const byId = new Map(todo.map((a) => [a.id, a]));

  const execute = async (a: Action): Promise<void> => {
    const op = a.op;
    switch (op.type) {
      case 'image.create':
      case 'image.replace': {
        for (const stale of await removeStaleBuilds(op.build.path)) opts.log(`${a.id}: removed ${stale}, left by an interrupted apply`);
        const k = recordKey({ type: 'image', path: op.build.path });
        const replaces = op.type === 'image.replace' ? { ...op.oldFile, extents: op.oldExtents } : undefined;
        // A build that was killed while publishing (extents renamed in, descriptor not yet):
        // its extents are recorded as pending with their identity; they are ours to remove.
        const prior = inventory.objects[k];
        if (prior?.type === 'image' && prior.pending?.extents.length) {
          await removeIfSame(prior.pending.extents.filter((e) => e.path !== op.build.path));
        }
        const name = a.id.replace(/^images\./, '');
        // Intent first (Crossplane's "create pending"): a crash between the rename and the
        // record below still leaves the published file recognisably ours.
        await createImage(op.build, {
          signal: opts.signal,
          replaces,
          beforePublish: async (id) => {
            const prev = inventory.objects[k];
            const pending = { ...id, recorded: op.recorded, createdAt: new Date().toISOString() };
            inventory.objects[k] = prev?.type === 'image'
              ? { ...prev, name, pending }
              : { type: 'image', name, path: op.build.path, ino: 0, dev: 0, birth: '0', extents: [], createdAt: pending.createdAt, recorded: op.recorded, pending };
            await save();
            failpoint('image-before-publish');
          },
        });
        failpoint('image-after-publish');
        const obs = (await observeImages([op.build.path], opts.cache)).get(op.build.path);
        if (!obs) throw new Error(`${op.build.path} is missing after it was built`);
        if (op.type === 'image.replace') {
          // Old extents the new image did not take over go, if reconcile made them and they are still those files.
          const keep = new Set(obs.vmdk?.extents ?? []);
          await removeIfSame(op.ownedExtents.filter((e) => !keep.has(e.path) && e.path !== op.build.path));
        }
        const rec: ImageRecord = {
          type: 'image', name, path: op.build.path, ino: obs.file.ino, dev: obs.file.dev, birth: obs.file.birth,
          extents: await identitiesOf(obs.vmdk?.extents ?? []), createdAt: new Date().toISOString(), recorded: op.recorded,
        };
        inventory.objects[k] = rec;
        await save();
        verify(a.id, obs, op.build);
        return;
      }
      case 'image.update': {
        // Only the file the plan saw: one swapped in since (or a symlink) is never resized or chmod'ed.
        await checkStillSame(op.path, op.expect, op.followSymlink);
        if (op.resize) await resizeImage(op.path, op.format, op.resize.size, op.resize);
        if (op.permissions) await setPermissions(op.path, op.permissions, { expect: op.expect, followSymlink: op.followSymlink });
        await observeImages([op.path], opts.cache);
        return;
      }
      case 'image.delete': {
        if (op.exists) {
          for (const f of await deleteImage(op.path, op.identity, op.extents)) opts.log(`${a.id}: kept ${f}: not the file reconcile made (another file took its place since the plan)`);
        }
        delete inventory.objects[op.inventoryKey];
        await save();
        return;
      }
      case 'pool.create':
      case 'pool.replace': {
        const v = virsh();
        if (op.type === 'pool.replace') {
          // The old definition goes; its storage (files, LVs, device contents) stays untouched.
          if (op.wasActive) await stopPool(v, op.name);
          await undefinePool(v, op.name);
        }
        if (op.secret) await ensureSecret(v, op.secret.usage, op.secret.type, op.secret.file);
        await definePool(v, op.name, op.definition);
        const uuid = parsePoolXml(await v.exec(['pool-dumpxml', op.name])).uuid;
        inventory.objects[recordKey({ type: 'pool', name: op.name })] = { type: 'pool', name: op.name, uuid, createdAt: new Date().toISOString() };
        await save();
        if (op.active) {
          await buildPool(v, op.name, op.definition.type);
          await startPool(v, op.name, op.definition.type);
        }
        await setAutostart(v, op.name, op.autostart);
        return;
      }
      case 'pool.update': {
        const v = virsh();
        if (op.redefine) await definePool(v, op.name, op.redefine, op.uuid);
        if (op.chmod) await setPermissions(op.chmod.path, op.chmod.permissions);
        if (op.start) {
          const type = (op.redefine ?? parsePoolXml(await v.exec(['pool-dumpxml', op.name])).definition).type;
          await buildPool(v, op.name, type);
          await startPool(v, op.name, type);
        }
        if (op.stop) await stopPool(v, op.name);
        if (op.autostart !== undefined) await setAutostart(v, op.name, op.autostart);
        return;
      }
      case 'pool.delete': {
        if (op.exists) {
          const v = virsh();
          if (op.active) await stopPool(v, op.name);
          // Only a dir pool's storage is removed, and libvirt does that with rmdir: a
          // directory still holding anything stays.
          if (op.poolType === 'dir') {
            await deletePoolStorage(v, op.name).catch((e: Error) => opts.log(`${a.id}: kept its directory (${e.message.replace(/^virsh \S* failed[^:]*: /, '')})`));
          }
          await undefinePool(v, op.name);
        }
        delete inventory.objects[op.inventoryKey];
        await save();
        return;
      }
      case 'volume.create':
      case 'volume.replace': {
        const v = virsh();
        const b = op.build;
        const key = recordKey({ type: 'volume', pool: b.pool, volume: b.name });
        if (op.incomplete && b.fileBased) {
          // An interrupted build is rebuilt only if the file is still the one it was making:
          // a volume someone made under that name since is not ours to replace.
          const now = await fileBirth(op.incomplete.path);
          if (now !== undefined && op.incomplete.birth !== undefined && op.incomplete.birth !== now) {
            delete inventory.objects[key];
            await save();
            throw new Error(`${op.incomplete.path} is no longer the volume an interrupted apply was making (another file took its name); forgotten, not replaced`);
          }
        }
        if (op.type === 'volume.replace') await deleteVolume(v, b.pool, b.name);
        // Recorded as building before anything exists (an empty key: whatever volume is found
        // under this name later was being made by us), then with its key once libvirt made it;
        // 'ready' only after its contents are complete. A volume left building is rebuilt.
        const rec: VolumeRecord = { type: 'volume', name: op.imageName, pool: b.pool, volume: b.name, key: '', path: '', status: 'building', createdAt: new Date().toISOString(), recorded: op.recorded };
        const before = inventory.objects[key];
        inventory.objects[key] = rec;
        await save();
        const birthOf = (p: string) => (b.fileBased ? fileBirth(p) : Promise.resolve(undefined));
        let made: { key: string; path: string } | undefined;
        let obs;
        try {
          obs = await createVolume(v, b, {
            signal: opts.signal,
            created: async (vol) => {
              made = vol;
              inventory.objects[key] = { ...rec, key: vol.key, path: vol.path, birth: await birthOf(vol.path) };
              await save();
              failpoint('volume-created');
            },
          });
        } catch (e) {
          // createVolume leaves no volume of ours behind when it fails (creation failed — the
          // name may be someone else's — or an import deleted its half-made volume): forget the
          // intent, or a volume someone makes under that name later would be taken for ours.
          // Only a kill -9 leaves the intent, and the next apply rebuilds.
          if (before && op.type === 'volume.create' && !made) inventory.objects[key] = before;
          else delete inventory.objects[key];
          await save();
          throw e;
        }
        await rememberVolume(opts.cache, obs);
        inventory.objects[key] = { ...rec, key: obs.key, path: obs.path, status: 'ready', birth: await birthOf(obs.path) };
        await save();
        // qcow2 options live only in the file: read it once now, so later plans find it cached.
        const q = b.qcow2;
        if (b.fileBased && b.format === 'qcow2' && q && (q.clusterSize !== undefined || q.lazyRefcounts !== undefined || q.compat !== undefined)) {
          await observeImages([obs.path], opts.cache);
        }
        if (obs.capacity < b.capacity) throw new Error(`${a.id}: volume has ${obs.capacity} bytes, expected ${b.capacity}`);
        return;
      }
      case 'volume.update': {
        const v = virsh();
        if (op.resize) await resizeVolume(v, op.pool, op.name, op.resize.capacity, op.resize.allocate);
        if (op.chmod) await setPermissions(op.chmod.path, op.chmod.permissions);
        return;
      }
      case 'volume.delete': {
        // The key of a file volume is its path, which a new file can take: check the birth time.
        const now = op.birth && op.path ? await fileBirth(op.path) : undefined;
        if (op.exists && op.birth && op.birth !== '0' && now !== undefined && now !== op.birth) {
          opts.log(`${a.id}: not deleted: ${op.path} is no longer the file reconcile created; forgotten`);
        } else if (op.exists) await deleteVolume(virsh(), op.pool, op.name);
        delete inventory.objects[op.inventoryKey];
        await save();
        return;
      }
      case 'domain.define': {
        const v = virsh();
        await defineDomain(v, op.xml);
        const uuid = (await v.exec(['domuuid', op.name])).trim();
        inventory.objects[recordKey({ type: 'domain', name: op.name })] = { type: 'domain', name: op.name, uuid, createdAt: new Date().toISOString() };
        await save();
        return;
      }
      case 'domain.disks': {
        const v = virsh();
        const pending: string[] = [];
        for (const step of op.steps) {
          const live = await changeDisk(v, op.name, step.verb, step.disk, op.running);
          if (!live) pending.push(`${step.verb.replace('-device', '')} ${step.disk.target}`);
        }
        await setOwnership(v, op.name, op.ownership, op.running);
        if (pending.length) opts.log(`${a.id}: saved in the persistent definition; the running domain takes it at its next restart (${pending.join(', ')})`);
        return;
      }
      case 'domain.undefine': {
        if (op.exists) await undefineDomain(virsh(), op.name);
        delete inventory.objects[op.inventoryKey];
        await save();
        return;
      }
      case 'none':
        return;
    }
  };

  const start = (a: Action): Promise<ActionResult> => {
    const existing = running.get(a.id);
    if (existing) return existing;
    const p = (async (): Promise<ActionResult> => {
      // Start (or join) each dependency first: the order of the plan's actions does not matter.
      const deps = await Promise.all(a.dependsOn.map((d) => (byId.has(d) ? start(byId.get(d)!) : Promise.resolve(undefined))));
      const failed = deps.find((d) => d && d.status !== 'done');
      if (failed && (failed.status === 'cancelled' || failed.status === 'not-started')) {
        opts.log(`${a.id}: not started (shutting down)`);
        return { id: a.id, kind: a.kind, status: 'not-started', seconds: 0, error: 'shutting down' };
      }
      if (failed) {
        opts.log(`${a.id}: skipped, because ${failed.id} did not complete`);
        return { id: a.id, kind: a.kind, status: 'skipped', seconds: 0, error: `${failed.id} did not complete` };
      }
      return limit(async () => {
        if (opts.signal?.aborted) {
          opts.log(`${a.id}: not started (shutting down)`);
          return { id: a.id, kind: a.kind, status: 'not-started' as const, seconds: 0, error: 'shutting down' };
        }
        const t0 = Date.now();
        opts.log(`${a.id}: ${VERB[a.kind][0]} (${a.reason})`);
        try {
          await execute(a);
          const seconds = (Date.now() - t0) / 1000;
          opts.log(`${a.id}: ${VERB[a.kind][1]} in ${seconds.toFixed(1)}s`);
          return { id: a.id, kind: a.kind, status: 'done' as const, seconds };
        } catch (e) {
          const seconds = (Date.now() - t0) / 1000;
          const msg = (e as Error).message;
          if (e instanceof CommandError && e.cancelled) {
            opts.log(`${a.id}: cancelled (shutting down); its scratch files are removed and the next apply builds it again`);
            return { id: a.id, kind: a.kind, status: 'cancelled' as const, seconds, error: msg };
          }
          opts.log(`${a.id}: FAILED: ${msg}`);
          return { id: a.id, kind: a.kind, status: 'failed' as const, seconds, error: msg };
        }
      });
    })();
    running.set(a.id, p);
    return p;
  };

  // Register every action before awaiting, so dependsOn always finds its promise.
  for (const a of todo) start(a);
  for (const r of await Promise.all(todo.map((a) => running.get(a.id)!))) results.set(r.id, r);
  await save();
  await (opts.cache as { save?: () => Promise<void> } | undefined)?.save?.();

  const counts = { created: 0, updated: 0, replaced: 0, deleted: 0, failed: 0, cancelled: 0, notStarted: 0 };
  for (const r of results.values()) {
    if (r.status === 'cancelled') counts.cancelled++;
    else if (r.status === 'not-started') counts.notStarted++;
    else if (r.status !== 'done') counts.failed++;
    else if (r.kind === 'create') counts.created++;
    else if (r.kind === 'update') counts.updated++;
    else if (r.kind === 'replace') counts.replaced++;
    else if (r.kind === 'delete') counts.deleted++;
  }
  return { results: [...results.values()], counts };
}

/** A file's birth time (ns), or undefined if it is gone: with the path, it names one file. */
function fileBirth(p: string): Promise<string | undefined> {
  return stat(p, { bigint: true }).then((s) => String(s.birthtimeNs), () => undefined);
}

/**
 * Saves shared by concurrent actions: one write at a time, and every caller waits for a
 * write that started after its call, so its change is on disk when it resumes. Under load
 * many changes ride on one write instead of one fsync'd rewrite of the file each.
 */
export function coalescedWriter(write: () => Promise<void>): () => Promise<void> {
  let running: Promise<void> | undefined;
  let next: Promise<void> | undefined;
  return () => {
    if (next) return next;
    if (!running) {
      running = write().finally(() => (running = undefined));
      return running;
    }
    next = running.catch(() => undefined).then(() => {
      next = undefined;
      running = write().finally(() => (running = undefined));
      return running;
    });
    return next;
  };
}

/** After a build, the image must be what was asked for; anything else is a bug worth stopping on. */
function verify(id: string, obs: { driver: string; virtualSize: number }, build: { format: Parameters<typeof driverFor>[0]; size?: number; encryption?: unknown }): void {
  const want = driverFor(build.format, !!build.encryption);
  if (obs.driver !== want) throw new Error(`${id}: built as ${obs.driver}, expected ${want}`);
  if (build.size !== undefined && (obs.virtualSize < build.size || obs.virtualSize - build.size >= sizeTolerance(build.format))) {
    throw new Error(`${id}: built with virtual size ${obs.virtualSize}, expected ${build.size}`);
  }
}
