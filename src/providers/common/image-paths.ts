// Where a declared image lives, whichever kind holds it: images refer to each other (copies,
// overlays) across files and pool volumes.
import path from 'node:path';
import { FILE_POOLS, type DesiredState, type ImageSpec } from '../../reconcile/model.js';
import type { ObservedPool } from '../../tools/libvirt-pool.js';
import type { ObservedVolume } from '../../tools/libvirt-volume.js';
import type { Observed } from '../observe.js';

const volumeKey = (pool: string, volume: string) => `${pool}/${volume}`;

/** The path an image has or will have: a file path, or its volume's path in a file pool. */
export function imagePathResolver(state: DesiredState, volumes: Map<string, Observed<ObservedVolume>>, pools: Map<string, Observed<ObservedPool>>) {
  return (spec: ImageSpec): string | undefined => {
    if (spec.location.kind === 'path') return spec.location.path;
    const { pool, volume } = spec.location;
    const obs = volumes.get(volumeKey(pool, volume));
    if (obs?.exists) return obs.path;
    const p = pools.get(pool);
    const target = (p?.exists ? p.definition.path : undefined) ?? state.pools[pool]?.path;
    return target && FILE_POOLS.includes(state.pools[pool]?.type ?? 'dir') ? path.join(target, volume) : undefined;
  };
}

/**
 * Which declared images, files or volumes, are overlays on a path: a base is never replaced
 * or pruned under an overlay, whichever kinds the two are.
 */
export function overlaysResolver(state: DesiredState, files: Map<string, Observed<{ backing?: string }>>, volumes: Map<string, Observed<{ backing?: string }>>) {
  return (p: string): string[] =>
    Object.values(state.images)
      .filter((s) => {
        const o = s.location.kind === 'path' ? files.get(s.location.path) : volumes.get(volumeKey(s.location.pool, s.location.volume));
        return o?.exists && o.backing === p;
      })
      .map((s) => `images.${s.name}`);
}
