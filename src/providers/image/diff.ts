// Desired images vs what qemu-img observed: which need creating, growing, rebuilding,
// re-permissioning or pruning. Pure: no I/O, so plan output is reproducible.
import { canResize, driverFor, formatOfDriver, sizeTolerance } from './formats.js';
import { bootcIdentity, type ImageBuild } from './build.js';
import type { ObservedImage } from './observe.js';
import { changeableBy, created, decideSize, imageOptions, keepAdopted, octal, permissionChanges, reasonOf, replaceRefusal, stateDirHint, wipeChange } from '../common/decisions.js';
import type { Inventory, InventoryRecord } from '../../reconcile/inventory.js';
import { extentRecords, imageRecordFor, resolveImageRecord, sameFile } from '../../reconcile/inventory.js';
import { sourceImage, type DesiredState, type ImageSpec } from '../../reconcile/model.js';
import { sameSeed, SEED_AS_BUILT, SEED_CHANGED, seedContentOnly, type SeedEntry } from '../common/cloud-init.js';
import { planFileInputs } from '../common/file-inputs.js';
import type { ImageOp } from './ops.js';
import type { DiskUse } from '../common/disk-users.js';
import type { SmallFileDigest } from '../common/small-files.js';
import { unobservable, type Observed } from '../observe.js';
import { inSync, orphanId, type NoOp, type Action, type Change, type Refusal } from '../../reconcile/plan.js';
import { formatSize } from '../../reconcile/sizes.js';
import { displayUrl } from '../../sources/http.js';

export interface ImageDiffInput {
  state: DesiredState;
  /** observations of declared image paths, inventory paths and source files */
  observed: Map<string, Observed<ObservedImage>>;
  inventory: Inventory;
  allowReplace: boolean;
  prune: boolean;
  /** where a declared image lives (pool images: their volume's path); default: its path */
  pathOf?: (spec: ImageSpec) => string | undefined;
  /** the declared images (files and volumes alike) that are overlays on a path */
  overlaysOf: (path: string) => string[];
  /** paths whose publish was interrupted half-way (new extents in, old descriptor): broken */
  interrupted?: Set<string>;
  /** image records the YAML no longer declares (inventory minus desired) */
  orphans: [string, InventoryRecord][];
  /** which domains use a file as a disk, and what a delete of it must wait for */
  diskUse: (path: string, identity?: { dev: number; ino: number }) => DiskUse;
  /** paths that could not be observed, with why */
  errors: Map<string, string>;
  /** sha256 of the cloud-init seed files observed */
  contents: Map<string, SmallFileDigest>;
  /** images whose source could not be resolved (a checksum list out of reach, an unreadable directory), with why */
  sourceErrors?: Map<string, string>;
}

export interface ImageDiff {
  actions: Action<ImageOp | NoOp>[];
  refusals: Refusal[];
  notes: string[];
}

// What qemu-img does when an option is not given, for comparing against older records.
const RECORDED_DEFAULTS: Record<string, string> = { preallocation: 'off', compressed: 'false', vhdxSubformat: 'dynamic' };
const RECORDED_FIELD: Record<string, string> = { preallocation: 'qcow2.preallocation', compressed: 'qcow2.compressed', vhdxSubformat: 'vhdx.subformat' };

function filePath(spec: ImageSpec): string {
  return spec.location.kind === 'path' ? spec.location.path : '';
}

// A digest observation could not tell (a checksum list out of reach): not compared.
const UNRESOLVED = '?';

/** The source as recorded in the inventory: a change of it means a rebuild. */
export function sourceIdentity(spec: ImageSpec): string {
  const s = spec.source;
  switch (s.kind) {
    case 'blank':
      return 'blank';
    case 'file':
      return `file:${s.file}`;
    case 'image':
      return `image:${s.image}`;
    case 'backing':
      return 'image' in s ? `backing:${s.image}` : `backing:${s.path}`;
    case 'container':
      // By image ID (its config digest): a new build of the image under the same name rebuilds.
      return s.bootc ? bootcIdentity(s.digest ?? UNRESOLVED, s.bootc, spec.filesystem) : `container:sha256:${s.digest ?? UNRESOLVED}`;
    case 'directory':
      // By content: the same files under another path build the same image.
      return `directory:sha256:${s.digest ?? UNRESOLVED}`;
    case 'url':
      // By content: another mirror of the same file builds the same image.
      return `url:sha256:${s.sha256 ?? UNRESOLVED}`;
    case 'cloudInit':
      // Salted by the apply that builds it (see seedIdentity); compared in recordedChanges.
      return 'cloudInit';
  }
}

/** Options qemu-img cannot report back, remembered at creation. */
export function recordedOptions(spec: ImageSpec): Record<string, string> {
  const r: Record<string, string> = { source: sourceIdentity(spec) };
  if (spec.qcow2?.preallocation) r.preallocation = spec.qcow2.preallocation;
  if (spec.qcow2?.compressed !== undefined) r.compressed = String(spec.qcow2.compressed);
  if (spec.vhdx?.subformat) r.vhdxSubformat = spec.vhdx.subformat;
  return r;
}

/** Creation options qemu-img cannot report, as recorded vs as declared now: changes mean a rebuild. */
export function recordedChanges(spec: ImageSpec, recorded: Record<string, string>, seedDigest?: string): Change[] {
  const out: Change[] = [];
  for (const [k, v] of Object.entries(recordedOptions(spec))) {
    if (k === 'source' && v === 'cloudInit') {
      if (seedDigest !== undefined && !sameSeed(recorded.source, seedDigest))
        out.push({ field: 'source', from: recorded.source?.startsWith('cloudInit:') ? SEED_AS_BUILT : (recorded.source ?? 'unknown'), to: SEED_CHANGED });
      continue;
    }
    if (k === 'source' && v.endsWith(`:${UNRESOLVED}`)) continue;
    const had = recorded[k] ?? RECORDED_DEFAULTS[k] ?? 'unknown';
    if (had !== v) out.push({ field: RECORDED_FIELD[k] ?? k, from: had, to: v });
  }
  return out;
}

export function diffImages(input: ImageDiffInput): ImageDiff {
  const { state, observed, inventory } = input;
  const pathOf = (s: ImageSpec) => input.pathOf?.(s) ?? filePath(s);
  const out: ImageDiff = { actions: [], refusals: [], notes: [] };
  const byPath = new Map<string, ImageSpec>();
  for (const spec of Object.values(state.images)) if (spec.location.kind === 'path') byPath.set(spec.location.path, spec);
  // The same file under another spelling (a symlinked directory): declared files by identity,
  // and image records by identity, so a path written differently is neither pruned nor foreign.
  const fileKey = (f: { dev: number; ino: number }) => `${f.dev}:${f.ino}`;
  const declaredFiles = new Map<string, string>();
  for (const [p, spec] of byPath) {
    const o = observed.get(p);
    // A followed symlink's observation is its target's: that file is declared too.
    if (o?.exists && o.driver !== 'none' && (o.symlink === undefined || spec.followSymlink)) declaredFiles.set(fileKey(o.file), spec.name);
  }
  const pending = new Set<string>(); // ids created or replaced in this plan
  const refuse = (id: string, message: string) => out.refusals.push({ id, message });
  const elsewhere = stateDirHint(inventory);

  // Which declared images are overlays on which paths (to protect bases from replace/prune).
  const { overlaysOf } = input;

  const dependencyPath = (spec: ImageSpec): { path: string; driver?: string; id?: string; size?: number; encryption?: { passphraseFile: string } } | undefined => {
    const s = spec.source;
    if (s.kind === 'file') return { path: s.file };
    if (s.kind === 'backing' && 'path' in s) return { path: s.path };
    const name = sourceImage(s);
    if (name) {
      const dep = state.images[name]!;
      const p = pathOf(dep);
      if (!p) return undefined;
      return {
        path: p,
        id: `images.${dep.name}`,
        driver: driverFor(dep.format, !!dep.encryption),
        size: sizeOf(observed.get(p)) ?? dep.size,
        encryption: dep.encryption ? { passphraseFile: dep.encryption.passphraseFile } : undefined,
      };
    }
    return undefined;
  };

  /** Resolves the build; undefined (with a refusal or a need recorded) when it cannot be planned yet. */
  const buildFor = (spec: ImageSpec, id: string, seed?: SeedEntry[]): { build: ImageBuild; dependsOn: string[] } | undefined => {
    const dep = dependencyPath(spec);
    const base: Omit<ImageBuild, 'source'> = {
      path: pathOf(spec),
      format: spec.format,
      size: spec.size,
      qcow2: spec.qcow2,
      vmdk: spec.vmdk,
      vhd: spec.vhd,
      vhdx: spec.vhdx,
      encryption: spec.encryption ? { passphraseFile: spec.encryption.passphraseFile, iterTime: spec.encryption.iterTime } : undefined,
      permissions: spec.permissions,
    };
    const s = spec.source;
    if (s.kind === 'url' || s.kind === 'directory' || s.kind === 'container') {
      const err = input.sourceErrors?.get(spec.name);
      if (err) {
        refuse(id, `${spec.origins.source ?? spec.origin}: ${err}`);
        return undefined;
      }
      if (s.kind === 'url')
        return {
          build: {
            ...base,
            source: { kind: 'download', url: s.url, sha256: s.sha256!, auth: s.auth, checksumFrom: s.checksumUrl ? `listed in ${displayUrl(s.checksumUrl)}` : 'source.sha256' },
          },
          dependsOn: [],
        };
      if (s.kind === 'container' && s.bootc)
        return { build: { ...base, source: { kind: 'bootc', ref: s.ref, filesystem: spec.filesystem, install: s.bootc, digest: s.digest! } }, dependsOn: [] };
      if (s.kind === 'container') return { build: { ...base, source: { kind: 'container', ref: s.ref, filesystem: spec.filesystem ?? 'ext4', digest: s.digest! } }, dependsOn: [] };
      return { build: { ...base, source: { kind: 'filesystem', dir: s.dir, filesystem: spec.filesystem ?? 'ext4', digest: s.digest! } }, dependsOn: [] };
    }
    if (!dep) {
      if (spec.source.kind === 'blank') return { build: { ...base, source: { kind: 'blank' } }, dependsOn: [] };
      if (seed) return { build: { ...base, source: { kind: 'seed', entries: seed } }, dependsOn: [] };
      refuse(id, `${spec.origins.source ?? spec.origin}: the path of the image it is built from is not known until that image exists; apply again once it does`);
      return undefined;
    }
    let driver = dep.driver;
    let size = dep.size;
    if (!dep.id) {
      if (!observed.has(dep.path)) {
        refuse(id, `${spec.origins.source ?? spec.origin}: source ${unobservable(input.errors, dep.path)}`);
        return undefined;
      }
      const src = observed.get(dep.path)!;
      if (!src.exists) {
        refuse(id, `${spec.origins.source ?? spec.origin}: source ${dep.path} does not exist`);
        return undefined;
      }
      driver = src.driver;
      size = src.virtualSize;
      if (src.encrypted) {
        refuse(id, `${spec.origins.source ?? spec.origin}: source ${dep.path} is encrypted; import it as a declared image (source.image) so its passphraseFile is known`);
        return undefined;
      }
    }
    if (spec.size !== undefined && size !== undefined && spec.size < size) {
      refuse(id, `${spec.origins.size ?? spec.origin}: size ${formatSize(spec.size)} is smaller than its source ${dep.path} (${formatSize(size)}); the image would lose data`);
      return undefined;
    }
    // A build waits for the image it copies or overlays, whichever kind that is (the engine keeps
    // only dependencies with work to do in this plan).
    const dependsOn = dep.id ? [dep.id] : [];
    const source: ImageBuild['source'] =
      spec.source.kind === 'backing' ? { kind: 'backing', path: dep.path, driver: driver ?? 'raw' } : { kind: 'convert', path: dep.path, driver, encryption: dep.encryption };
    // A file source's size is what this plan observed (a saved plan is refused if the file
    // moves); a declared image may be rebuilt first, so apply reads its size then.
    const buildSize = spec.size ?? (dep.id ? undefined : size);
    return { build: { ...base, size: buildSize, source }, dependsOn };
  };

  // Images that depend on others come after them, so dependsOn can name pending builds.
  for (const spec of orderByDependency(state)) {
    const id = `images.${spec.name}`;
    if (spec.location.kind === 'pool') continue; // volumes: diff-volumes.ts
    // An image made already is kept as built while its source cannot be looked at.
    const sourceError = input.sourceErrors?.get(spec.name);
    if (sourceError && observed.get(spec.location.path)?.exists) out.notes.push(`${id}: ${sourceError}; the image is kept as it was built`);
    const p = spec.location.path;
    if (!observed.has(p)) {
      refuse(id, `${spec.origin}: ${unobservable(input.errors, p)}`);
      continue;
    }
    const inputs = planFileInputs(spec, id, input.contents, input.errors);
    if (!inputs.ok) {
      refuse(id, inputs.refusal);
      continue;
    }
    out.notes.push(...inputs.warnings);
    const seed = inputs.seed;
    const seedDigest = seed?.digest;
    const seedEntries = seed?.entries;
    const obs = observed.get(p)!;
    const record = obs.exists ? imageRecordFor(inventory, p, obs.file, obs.symlink !== undefined) : imageRecordFor(inventory, p, undefined);
    const ours = !!record && obs.exists && sameFile(record, obs.file);

    if (!obs.exists) {
      if (spec.source.kind === 'blank' && spec.size === undefined) {
        refuse(id, `${spec.origin}: ${p} does not exist; images.${spec.name} adopts it and declares no size to create it with`);
        continue;
      }
      const b = buildFor(spec, id, seedEntries);
      if (!b) continue;
      pending.add(id);
      const what = [spec.format, b.build.size !== undefined ? formatSize(b.build.size) : seed ? undefined : 'source size', describeSource(spec)].filter(Boolean).join(', ');
      out.actions.push({
        id,
        resource: 'image',
        kind: 'create',
        code: 'new',
        reason: `new image ${p} (${what})`,
        destructive: false,
        dependsOn: b.dependsOn,
        changes: created({
          ...imageOptions(spec),
          size: b.build.size !== undefined ? formatSize(b.build.size) : seed ? 'as its files make it' : 'as its source',
          source: describeSource(spec),
          wipe: spec.wipe,
          owner: spec.permissions?.owner,
          group: spec.permissions?.group,
          mode: octal(spec.permissions?.mode ?? 0o600),
        }),
        op: { type: 'image.create', build: b.build, recorded: recordedOptions(spec), dirs: dirsMadeAbove(inventory, p), wipe: spec.wipe },
      });
      continue;
    }

    // Something is at the path that reconcile did not make: only the YAML can hand it over.
    if (obs.symlink !== undefined && !spec.followSymlink) {
      refuse(
        id,
        `${spec.origin}: ${p} is a symlink to ${obs.symlink}; reconcile does not follow links at image paths (one can point at any file). If its target is this image, declare followSymlink: true (with adopt: true)`,
      );
      continue;
    }
    if (!ours && !spec.adopt) {
      refuse(
        id,
        `${spec.origin}: ${p} exists and reconcile did not create it, so it is left alone. To manage it, add adopt: true to images.${spec.name} (an adopted image is changed only in what its own declaration sets, and never deleted); otherwise move the file away${elsewhere}`,
      );
      continue;
    }
    if (obs.driver === 'none') {
      refuse(id, `${spec.origin}: ${p} is a symlink to ${obs.symlink}, which does not exist`);
      continue;
    }

    const rebuild: Change[] = [];
    const update: Change[] = [];
    // Already broken by an interrupted replace: rebuilding it loses nothing more, and the
    // replace was allowed when it started.
    const incomplete = ours && !!input.interrupted?.has(p);
    if (incomplete) rebuild.push({ field: 'state', from: 'incomplete (a replace was interrupted while publishing)', to: 'complete' });
    const wantDriver = driverFor(spec.format, !!spec.encryption);
    if (obs.driver !== wantDriver) {
      if (spec.encryption && !obs.encrypted) rebuild.push({ field: 'encryption', from: 'none', to: 'luks' });
      else if (!spec.encryption && obs.encrypted) rebuild.push({ field: 'encryption', from: obs.encrypted, to: 'none' });
      else rebuild.push({ field: 'format', from: formatOfDriver(obs.driver), to: spec.format });
    } else {
      if (spec.encryption && !obs.encrypted) rebuild.push({ field: 'encryption', from: 'none', to: 'luks' });
      if (!spec.encryption && obs.encrypted) rebuild.push({ field: 'encryption', from: obs.encrypted, to: 'none' });
      rebuild.push(...optionChanges(spec, obs));
      if (ours) rebuild.push(...recordedChanges(spec, record.recorded, seedDigest));
    }
    const wantBacking = spec.source.kind === 'backing' ? dependencyPath(spec)?.path : undefined;
    if (wantBacking !== undefined && obs.backing !== wantBacking) {
      rebuild.push({ field: 'backing', from: obs.backing ?? 'none', to: wantBacking });
    }

    const mine = changeableBy(ours, spec.declared);
    const kept = keepAdopted(rebuild, mine, p, spec.name);
    if (kept) out.notes.push(`${id}: ${kept}`);

    let grow: number | undefined;
    const size = decideSize(spec.size, obs.virtualSize, sizeTolerance(spec.format, obs.driver), canResize(spec.format, !!spec.encryption), spec.format);
    if (size.kind === 'shrink') {
      refuse(
        id,
        `${spec.origins.size ?? spec.origin}: size ${formatSize(spec.size!)} is smaller than the image at ${p} (${formatSize(size.from)}); shrinking an image destroys data and is refused. Declare at least ${formatSize(size.from)}`,
      );
      continue;
    }
    // Growing an image that is rebuilt anyway is part of the rebuild.
    if (size.kind === 'rebuild' || (size.kind === 'grow' && rebuild.length)) rebuild.push(size.change);
    else if (size.kind === 'grow') {
      update.push(size.change);
      grow = spec.size;
    }
    const perm = spec.permissions;
    const permChange = mine('permissions') ? permissionChanges(perm, { uid: obs.file.uid, gid: obs.file.gid, mode: obs.file.mode }) : [];

    if (rebuild.length) {
      // Made from its source alone (a seed; rebuild: onChange): a new source content is rebuilt
      // without --allow-replace, as long as nothing else about it changed.
      // A seed holds nothing but its files (protect does not apply to it); rebuild: onChange
      // needs no --allow-replace, but protect: true still forbids it.
      const seedOnly = ours && seedContentOnly(rebuild);
      const derived = seedOnly || (ours && spec.rebuild === 'onChange' && rebuild.every((c) => c.field === 'source'));
      const refused = replaceRefusal({
        origin: spec.origin,
        what: p,
        rebuild,
        protect: spec.protect && !seedOnly,
        allowReplace: input.allowReplace || derived,
        incomplete,
        overlays: overlaysOf(p).filter((o) => o !== id && !pending.has(o)),
      });
      if (refused) {
        refuse(id, refused);
        continue;
      }
      const b = buildFor(spec, id, seedEntries);
      if (!b) continue;
      pending.add(id);
      out.actions.push({
        id,
        resource: 'image',
        kind: 'replace',
        code: incomplete ? 'interrupted' : 'rebuild',
        reason: derived
          ? spec.source.kind === 'cloudInit'
            ? 'cloud-init seed files changed (rebuilt from them; it holds nothing else)'
            : `its ${spec.source.kind === 'url' ? 'download' : spec.source.kind === 'container' ? 'container image' : spec.source.kind} changed (rebuild: onChange)`
          : reasonOf(rebuild),
        destructive: !incomplete && !derived,
        changes: rebuild,
        dependsOn: b.dependsOn,
        op: {
          type: 'image.replace',
          build: b.build,
          recorded: recordedOptions(spec),
          wipe: spec.wipe,
          oldFile: { ino: obs.file.ino, dev: obs.file.dev, birth: obs.file.birth },
          oldExtents: obs.vmdk?.extents ?? [],
          ownedExtents: ours ? extentRecords(record.extents) : [],
        },
      });
      continue;
    }
    const wipe = ours ? wipeChange(record.wipe, spec.wipe) : undefined;
    const changes = [...update, ...permChange, ...(wipe ? [wipe.change] : [])];
    if (changes.length) {
      out.actions.push({
        id,
        resource: 'image',
        kind: 'update',
        code: 'drift',
        reason: reasonOf(changes),
        destructive: false,
        changes,
        dependsOn: [],
        op: {
          type: 'image.update',
          path: p,
          format: spec.format,
          expect: { ino: obs.file.ino, dev: obs.file.dev, birth: obs.file.birth },
          followSymlink: spec.followSymlink,
          resize:
            grow !== undefined
              ? { size: grow, preallocation: spec.qcow2?.preallocation, encryption: spec.encryption && { passphraseFile: spec.encryption.passphraseFile } }
              : undefined,
          permissions: permChange.length ? perm : undefined,
          wipe: wipe?.set,
        },
      });
    } else {
      out.actions.push(inSync('image', id, ours));
    }
  }

  // Inventory objects that left the YAML: deleted only with --prune, and only if still ours.
  for (const [key, stored] of input.orphans) {
    if (stored.type !== 'image') continue;
    const id = orphanId(key);
    // An inventory object that cannot be looked at cannot be pruned safely.
    if (!observed.has(stored.path)) {
      if (input.prune) refuse(id, unobservable(input.errors, stored.path));
      continue;
    }
    const obs = observed.get(stored.path)!;
    const rec = resolveImageRecord(stored, obs.exists ? obs.file : undefined)!;
    // Declared again as a volume of a file pool (the pool's directory holds the file): the same file.
    const asVolume = Object.values(state.images).find((s) => s.location.kind === 'pool' && pathOf(s) === rec.path)?.name;
    const alias = asVolume ?? (obs.exists && obs.symlink === undefined ? declaredFiles.get(fileKey(obs.file)) : undefined);
    if (alias) {
      out.notes.push(`${rec.path} (was images.${rec.name}) is declared as images.${alias} under another path; not pruned`);
      continue;
    }
    if (!input.prune) {
      out.notes.push(`${rec.path} (was images.${rec.name}) left the YAML; \`apply --prune\` deletes it`);
      continue;
    }
    // Only the record goes: the file is gone, or is no longer the one reconcile made.
    const forget = (code: 'gone' | 'not-ours', reason: string) =>
      out.actions.push({
        id,
        resource: 'image',
        kind: 'delete',
        code,
        reason,
        destructive: false,
        changes: [],
        dependsOn: [],
        op: {
          type: 'image.delete',
          path: rec.path,
          identity: rec,
          extents: [],
          pendingExtents: stored.pending?.extents ?? [],
          dirs: stored.dirs ?? [],
          inventoryKey: key,
          exists: false,
        },
      });
    if (!obs.exists) {
      forget('gone', 'already gone; forgotten from the inventory');
      continue;
    }
    if (!sameFile(rec, obs.file) || obs.symlink !== undefined) {
      out.notes.push(`${rec.path} (was images.${rec.name}) is no longer the file reconcile created (another file took its place); not deleting it, forgetting it`);
      forget('not-ours', 'replaced by a file reconcile did not create: forgotten, not deleted');
      continue;
    }
    const overlays = overlaysOf(rec.path);
    if (overlays.length) {
      refuse(id, `${rec.path} (was images.${rec.name}) left the YAML, but ${overlays.join(', ')} still use it as backing file; it is not pruned`);
      continue;
    }
    const use = input.diskUse(rec.path, obs.file);
    if (use.unknown) {
      refuse(id, `${rec.path} (was images.${rec.name}) left the YAML, but reconcile cannot tell whether a domain uses it as a disk (${use.unknown}); it is not deleted blind`);
      continue;
    }
    if (use.blocking.length) {
      refuse(
        id,
        `${rec.path} (was images.${rec.name}) left the YAML, but domain ${use.blocking.join(', ')} still ${use.blocking.length > 1 ? 'have' : 'has'} it as a disk; it is not deleted under a domain (detach it, or undefine the domain, first)`,
      );
      continue;
    }
    out.actions.push({
      id,
      resource: 'image',
      kind: 'delete',
      code: 'left-yaml',
      reason: `images.${rec.name} left the YAML (${formatSize(obs.virtualSize)} ${formatOfDriver(obs.driver)})${rec.wipe ? `; overwritten (${rec.wipe}) before it is deleted` : ''}`,
      destructive: true,
      changes: [],
      dependsOn: use.after,
      // The extents recorded at creation, not those the descriptor names now (it may have been edited to name any file).
      op: {
        type: 'image.delete',
        path: rec.path,
        identity: { ino: rec.ino, dev: rec.dev, birth: rec.birth },
        extents: extentRecords(rec.extents),
        pendingExtents: stored.pending?.extents ?? [],
        dirs: stored.dirs ?? [],
        inventoryKey: key,
        exists: true,
        wipe: rec.wipe,
      },
    });
  }
  return out;
}

/**
 * Directories reconcile made (for other images) that hold `p`: recorded with the new image as
 * well, so whichever of them is deleted last removes them once they are empty.
 */
function dirsMadeAbove(inventory: Inventory, p: string): string[] {
  const dirs = new Set<string>();
  for (const r of Object.values(inventory.objects)) if (r.type === 'image') for (const d of r.dirs ?? []) if (p.startsWith(`${d}/`)) dirs.add(d);
  return [...dirs].sort((a, b) => a.length - b.length);
}

const sizeOf = (o: Observed<ObservedImage> | undefined) => (o?.exists ? o.virtualSize : undefined);

function optionChanges(spec: ImageSpec, obs: ObservedImage): Change[] {
  const ch: Change[] = [];
  const cmp = (field: string, want: unknown, have: unknown) => {
    if (want !== undefined && want !== have) ch.push({ field, from: have === undefined ? 'unset' : String(have), to: String(want) });
  };
  if (spec.format === 'qcow2' && spec.qcow2) {
    const q = spec.qcow2;
    if (q.clusterSize !== undefined && q.clusterSize !== obs.clusterSize) {
      ch.push({ field: 'qcow2.clusterSize', from: obs.clusterSize ? formatSize(obs.clusterSize) : 'unset', to: formatSize(q.clusterSize) });
    }
    cmp('qcow2.compression', q.compression, obs.qcow2?.compressionType);
    cmp('qcow2.lazyRefcounts', q.lazyRefcounts, obs.qcow2?.lazyRefcounts);
    cmp('qcow2.compat', q.compat, obs.qcow2?.compat);
    cmp('qcow2.refcountBits', q.refcountBits, obs.qcow2?.refcountBits);
    cmp('qcow2.extendedL2', q.extendedL2, obs.qcow2?.extendedL2);
  }
  if (spec.format === 'vmdk') {
    cmp('vmdk.subformat', spec.vmdk?.subformat, obs.vmdk?.createType);
    cmp('vmdk.adapterType', spec.vmdk?.adapterType, obs.vmdk?.adapterType);
  }
  if (spec.format === 'vhd') cmp('vhd.subformat', spec.vhd?.subformat, obs.vhdSubformat);
  return ch;
}

function describeSource(spec: ImageSpec): string {
  const s = spec.source;
  if (s.kind === 'file') return `from ${s.file}`;
  if (s.kind === 'image') return `copy of images.${s.image}`;
  if (s.kind === 'backing') return `overlay on ${'image' in s ? `images.${s.image}` : s.path}`;
  if (s.kind === 'cloudInit') return 'cloud-init seed';
  if (s.kind === 'url') return `download of ${displayUrl(s.url)} (sha256 ${s.sha256?.slice(0, 12) ?? 'from its checksum list'}…)`;
  if (s.kind === 'directory') return `${spec.filesystem ?? 'ext4'} filesystem of ${s.dir}`;
  if (s.kind === 'container' && s.bootc) return `bootable disk of bootc image ${s.ref} (${s.digest?.slice(0, 12) ?? '?'}…, bcvk)`;
  if (s.kind === 'container') return `${spec.filesystem ?? 'ext4'} filesystem of container image ${s.ref} (${s.digest?.slice(0, 12) ?? '?'}…)`;
  return 'blank';
}

/** Declared images, each after the image its source or backing names. */
export function orderByDependency(state: DesiredState): ImageSpec[] {
  const done = new Set<string>();
  const out: ImageSpec[] = [];
  const visit = (spec: ImageSpec) => {
    if (done.has(spec.name)) return;
    done.add(spec.name);
    const dep = sourceImage(spec.source);
    if (dep && state.images[dep]) visit(state.images[dep]!);
    out.push(spec);
  };
  for (const name of Object.keys(state.images).sort()) visit(state.images[name]!);
  return out;
}
