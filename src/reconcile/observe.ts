// Observation for a plan. Image files: one batched stat pass, qemu-img only for files not
// in the stat-keyed cache. libvirt: every pool and volume of interest in one virsh batch.
import { observeImages, type ObservationCache, type ObservedImage } from '../providers/image-file.js';
import { parsePoolReads, poolReadCommands, type ObservedPool } from '../providers/libvirt-pool.js';
import { parseVolumeXml, volumeReadCommands, type ObservedVolume } from '../providers/libvirt-volume.js';
import type { Virsh } from '../providers/virsh.js';
import type { Inventory } from './inventory.js';
import type { DesiredState } from './model.js';

export interface Observation {
  files: Map<string, ObservedImage | null>;
  pools: Map<string, ObservedPool | null>;
  volumes: Map<string, ObservedVolume | null>;
}

export function filesToObserve(state: DesiredState, inventory: Inventory): string[] {
  const paths = new Set<string>();
  for (const spec of Object.values(state.images)) if (spec.location.kind === 'path') paths.add(spec.location.path);
  for (const rec of Object.values(inventory.objects)) if (rec.type === 'image') paths.add(rec.path);
  return [...paths].sort();
}

export function libvirtToObserve(state: DesiredState, inventory: Inventory): { pools: string[]; volumes: { pool: string; name: string }[] } {
  const pools = new Set(Object.keys(state.pools));
  const vols = new Map<string, { pool: string; name: string }>();
  for (const spec of Object.values(state.images)) {
    if (spec.location.kind !== 'pool') continue;
    pools.add(spec.location.pool);
    vols.set(`${spec.location.pool}/${spec.location.volume}`, { pool: spec.location.pool, name: spec.location.volume });
  }
  for (const rec of Object.values(inventory.objects)) {
    if (rec.type === 'pool') pools.add(rec.name);
    if (rec.type === 'volume') {
      pools.add(rec.pool);
      vols.set(`${rec.pool}/${rec.volume}`, { pool: rec.pool, name: rec.volume });
    }
  }
  return { pools: [...pools].sort(), volumes: [...vols.values()].sort((a, b) => `${a.pool}/${a.name}`.localeCompare(`${b.pool}/${b.name}`)) };
}

export async function observeMore(
  observed: Map<string, ObservedImage | null>,
  paths: string[],
  cache?: ObservationCache,
): Promise<void> {
  const todo = paths.filter((p) => !observed.has(p));
  if (!todo.length) return;
  for (const [p, o] of await observeImages(todo, cache)) observed.set(p, o);
}

/** Pools (info, XML, volume list) and volumes (XML) in one virsh process. */
export async function observeLibvirt(
  virsh: Virsh,
  poolNames: string[],
  volumes: { pool: string; name: string }[],
): Promise<{ pools: Map<string, ObservedPool | null>; volumes: Map<string, ObservedVolume | null> }> {
  if (!poolNames.length && !volumes.length) return { pools: new Map(), volumes: new Map() };
  const outputs = await virsh.batch([...poolReadCommands(poolNames), ...volumeReadCommands(volumes)]);
  const pools = parsePoolReads(poolNames, outputs.slice(0, poolNames.length * 3));
  const vols = new Map<string, ObservedVolume | null>();
  volumes.forEach((v, i) => {
    const xml = outputs[poolNames.length * 3 + i];
    vols.set(`${v.pool}/${v.name}`, xml ? parseVolumeXml(v.pool, xml) : null);
  });
  return { pools, volumes: vols };
}
