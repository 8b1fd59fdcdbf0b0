// Images declared in a libvirt pool (kind "volume"): registered in providers/registry.ts.
import type { Kind } from '../../reconcile/kind.js';
import { FILE_POOLS } from '../../reconcile/model.js';
import { fileInputsOf } from '../common/file-inputs.js';
import { diskUse } from '../common/disk-users.js';
import { overlaysResolver } from '../common/image-paths.js';
import { diffVolumes } from './diff.js';
import { batchKey, createBlankMany, executeVolume, headerDeclared } from './execute.js';

export const volumeKind: Kind = {
  resource: 'volume',
  targets(state, inventory) {
    const pools: string[] = [];
    const files: string[] = [];
    const volumes: { pool: string; name: string; header?: boolean }[] = [];
    const contents: string[] = [];
    for (const spec of Object.values(state.images)) {
      if (spec.location.kind !== 'pool') continue;
      const { pool, volume } = spec.location;
      const header = headerDeclared({ format: spec.format, fileBased: FILE_POOLS.includes(state.pools[pool]?.type ?? 'dir'), qcow2: spec.qcow2 });
      pools.push(pool);
      volumes.push({ pool, name: volume, header });
      if (spec.source.kind === 'file') files.push(spec.source.file);
      if (spec.source.kind === 'backing' && 'path' in spec.source) files.push(spec.source.path);
      contents.push(...fileInputsOf(spec));
    }
    const declared = new Set(volumes.map((v) => `${v.pool}/${v.name}`));
    let orphaned = false;
    for (const rec of Object.values(inventory.objects)) {
      if (rec.type !== 'volume') continue;
      pools.push(rec.pool);
      volumes.push({ pool: rec.pool, name: rec.volume });
      orphaned ||= !declared.has(`${rec.pool}/${rec.volume}`);
    }
    // A volume that may be pruned: which domains use it as a disk is looked at too.
    return { pools, volumes, files, contents, diskUsers: orphaned };
  },
  declared: (state) =>
    Object.values(state.images).flatMap((s) => (s.location.kind === 'pool' ? [{ type: 'volume' as const, pool: s.location.pool, volume: s.location.volume }] : [])),
  diff: (i) =>
    diffVolumes({
      state: i.state,
      pools: i.observed.pools,
      volumes: i.observed.volumes,
      files: i.observed.files,
      inventory: i.inventory,
      allowReplace: i.allowReplace,
      prune: i.prune,
      overlaysOf: overlaysResolver(i.state, i.observed.files, i.observed.volumes),
      orphans: i.orphans,
      diskUse: (key, path) => diskUse(key, path, undefined, i),
      errors: i.observed.errors,
      contents: i.observed.contents,
      directories: i.observed.directories,
    }),
  execute: executeVolume,
  // 32 blank volumes per virsh process: most of a process's cost saved, and each group short
  // enough (well under a second) that a kill -9 inside it is recovered as for one volume.
  batch: { key: batchKey, size: 32, execute: createBlankMany },
};
