// Image files at a path (kind "image"): registered in providers/registry.ts.
import path from 'node:path';
import type { Kind } from '../../reconcile/kind.js';
import { fileInputsOf } from '../common/file-inputs.js';
import { diskUse } from '../common/disk-users.js';
import { imagePathResolver, overlaysResolver } from '../common/image-paths.js';
import { diffImages } from './diff.js';
import { sourceTarget, withSourceDigests } from './source-digests.js';
import type { SourceTarget } from '../../sources/resolve.js';
import { interruptedPublishes, pendingExtentPaths } from './interrupted.js';
import { removeStaleBuildsIn } from './build.js';
import { createBlankImages, executeImage, imageBatchKey } from './execute.js';
import { pruneCache } from '../../sources/cache.js';
import { releaseAbandonedMounts } from '../../tools/podman.js';

export const imageKind: Kind = {
  resource: 'image',
  targets(state, inventory) {
    const files: string[] = [];
    const contents: string[] = [];
    const sources: SourceTarget[] = [];
    for (const spec of Object.values(state.images)) {
      if (spec.location.kind !== 'path') continue;
      files.push(spec.location.path);
      // Source files are read up front (from the stat-keyed cache after the first time):
      // a build needs their format and size, and no decision waits for a second round.
      if (spec.source.kind === 'file') files.push(spec.source.file);
      if (spec.source.kind === 'backing' && 'path' in spec.source) files.push(spec.source.path);
      const st = sourceTarget(spec);
      if (st) sources.push(st);
      contents.push(...fileInputsOf(spec));
    }
    const declared = new Set(files);
    let orphaned = false;
    for (const rec of Object.values(inventory.objects)) {
      if (rec.type !== 'image') continue;
      files.push(rec.path);
      orphaned ||= !declared.has(rec.path);
    }
    // An image that may be pruned: which domains use it as a disk is looked at too.
    return { files, contents, sources, identities: pendingExtentPaths(inventory), diskUsers: orphaned };
  },
  declared: (state) => Object.values(state.images).flatMap((s) => (s.location.kind === 'path' ? [{ type: 'image' as const, path: s.location.path }] : [])),
  diff: (i) => {
    const { state, errors: sourceErrors } = withSourceDigests(i.state, i.observed.sources);
    return diffImages({
      state,
      sourceErrors,
      observed: i.observed.files,
      inventory: i.inventory,
      allowReplace: i.allowReplace,
      prune: i.prune,
      pathOf: imagePathResolver(i.state, i.observed.volumes, i.observed.pools),
      overlaysOf: overlaysResolver(i.state, i.observed.files, i.observed.volumes),
      interrupted: interruptedPublishes(i.inventory, i.observed.files, i.observed.identities),
      orphans: i.orphans,
      diskUse: (p, identity) => diskUse(p, undefined, identity, i),
      errors: i.observed.errors,
      contents: i.observed.contents,
    });
  },
  execute: executeImage,
  // Build directories of killed applies beside images already made (one listing per directory),
  // and downloads no image was built from (see sources/cache.ts).
  tidy: async (records, stateDir) => {
    const byDir = new Map<string, Set<string>>();
    const used = new Set<string>();
    for (const r of records) {
      if (r.type !== 'image') continue;
      const names = byDir.get(path.dirname(r.path)) ?? new Set<string>();
      names.add(path.basename(r.path));
      byDir.set(path.dirname(r.path), names);
      const digest = /^url:sha256:([0-9a-f]{64})$/.exec(r.recorded?.source ?? '')?.[1];
      if (digest) used.add(digest);
    }
    const builds = (await Promise.all([...byDir].map(([dir, names]) => removeStaleBuildsIn(dir, names)))).flat();
    const downloads = await pruneCache(stateDir, used);
    // Container images a killed build left mounted (only if one ever mounted any: podman is not run otherwise).
    const mounts = await releaseAbandonedMounts(path.join(stateDir, 'scratch'));
    return [
      ...mounts,
      ...builds.map((d) => `removed ${d}, left by an interrupted apply`),
      ...downloads.map((d) => `removed ${d} from the download cache: no image is built from it, and it was untouched for a day`),
    ];
  },
  // 32 quick blank images per shell process (see imageBatchKey): a process spawned from a
  // small shell costs a fraction of one spawned from node.
  batch: { key: imageBatchKey, size: 32, execute: createBlankImages },
};
