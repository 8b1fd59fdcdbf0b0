// Observation for a plan. Image files: one batched stat pass, qemu-img only for files not
// in the stat-keyed cache. libvirt: every pool and volume of interest in one virsh batch.
import { lstat, readlink } from 'node:fs/promises';
import { lstatIdentity, observeImages, sameIdentity, type ObservationCache, type ObservedImage } from '../providers/image/files.js';
import { parsePoolReads, poolReadCommands, type ObservedPool } from '../tools/libvirt-pool.js';
import { parseVolumeXml, volumeReadCommands, type ObservedVolume } from '../tools/libvirt-volume.js';
import { cacheable, fileSignature, type StatCache } from '../providers/common/stat-cache.js';
import {
  domainReadCommands, parseCapabilities, parseDomainReads, type DomainCapabilities, type ObservedDomain,
} from '../tools/libvirt-domain.js';
import { domcapsCacheKey } from '../providers/domain/domcaps-signature.js';
import type { Virsh } from '../tools/virsh.js';
import type { Inventory } from './inventory.js';
import type { DesiredState } from './model.js';

export interface Observation {
  files: Map<string, ObservedImage | null>;
  pools: Map<string, ObservedPool | null>;
  volumes: Map<string, ObservedVolume | null>;
  domains: Map<string, ObservedDomain | null>;
  /** domcapabilities by virt type (kvm, qemu) */
  caps: Map<string, DomainCapabilities>;
}

export interface LibvirtTargets {
  pools: string[];
  volumes: { pool: string; name: string }[];
  domains: string[];
  /** virt types whose domcapabilities are needed */
  virtTypes: string[];
  /** identity of what the answer depends on (see domcapsSignature): cached answers are reused */
  capsSignature?: string;
}

export function filesToObserve(state: DesiredState, inventory: Inventory): string[] {
  const paths = new Set<string>();
  for (const spec of Object.values(state.images)) if (spec.location.kind === 'path') paths.add(spec.location.path);
  for (const rec of Object.values(inventory.objects)) if (rec.type === 'image') paths.add(rec.path);
  for (const vm of Object.values(state.vms)) for (const d of vm.disks) if (d.path) paths.add(d.path);
  return [...paths].sort();
}

export function libvirtToObserve(state: DesiredState, inventory: Inventory): LibvirtTargets {
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
  const domains = new Set(Object.keys(state.vms));
  for (const rec of Object.values(inventory.objects)) if (rec.type === 'domain') domains.add(rec.name);
  return {
    pools: [...pools].sort(),
    volumes: [...vols.values()].sort((a, b) => `${a.pool}/${a.name}`.localeCompare(`${b.pool}/${b.name}`)),
    domains: [...domains].sort(),
    virtTypes: [],
  };
}

export async function observeMore(
  observed: Map<string, ObservedImage | null>,
  paths: string[],
  cache?: ObservationCache,
  /** paths that could not be observed, with why: the objects on them are refused, not the whole plan */
  errors?: Map<string, string>,
): Promise<void> {
  const todo = paths.filter((p) => !observed.has(p) && !errors?.has(p));
  if (!todo.length) return;
  for (const [p, o] of await observeImages(todo, cache, errors)) observed.set(p, o);
}

/** The cache key of a file volume's XML observation. */
export const volumeCacheKey = (pool: string, name: string) => `volume:${pool}/${name}`;

/**
 * Pools (info, XML, volume list) in one virsh process. A volume the list does not show is
 * absent; one whose file matches the stat cache is known without asking libvirt; the rest
 * (vol-dumpxml costs libvirt a header read each) go to one more batch — none in a no-op.
 */
export async function observeLibvirt(
  virsh: Virsh,
  targets: LibvirtTargets,
  cache?: StatCache,
): Promise<Omit<Observation, 'files'>> {
  const { pools: poolNames, volumes, domains: domainNames, virtTypes, capsSignature: sig } = targets;
  // domcapabilities costs libvirt a QEMU probe on some hosts (seconds): answered from the
  // cache while the daemon and QEMU binaries are the same ones.
  const caps = new Map<string, DomainCapabilities>();
  for (const t of virtTypes) {
    const hit = sig ? cache?.get<DomainCapabilities>(domcapsCacheKey(virsh.uri, t), sig) : undefined;
    if (hit) caps.set(t, hit);
  }
  const askCaps = virtTypes.filter((t) => !caps.has(t));
  // Pools, domains and capabilities in one process; volumes only where the cache cannot answer.
  const first = [...poolReadCommands(poolNames), ...domainReadCommands(domainNames), ...askCaps.map((t) => ['domcapabilities', '--virttype', t])];
  const outputs = first.length ? await virsh.batch(first) : [];
  const pools = parsePoolReads(poolNames, outputs.slice(0, poolNames.length * 3));
  const domains = parseDomainReads(domainNames, outputs.slice(poolNames.length * 3, poolNames.length * 3 + domainNames.length * 3));
  askCaps.forEach((t, i) => {
    const xml = outputs[poolNames.length * 3 + domainNames.length * 3 + i];
    if (!xml) return;
    caps.set(t, parseCapabilities(xml));
    if (sig) cache?.set(domcapsCacheKey(virsh.uri, t), sig, caps.get(t));
  });
  const vols = new Map<string, ObservedVolume | null>();
  const misses: { pool: string; name: string; sig?: string }[] = [];
  await Promise.all(volumes.map(async (v) => {
    const key = `${v.pool}/${v.name}`;
    const listed = pools.get(v.pool)?.volumes;
    if (!listed) return void vols.set(key, null); // pool absent or inactive: its volumes cannot be seen
    const volPath = listed.get(v.name);
    if (volPath === undefined) return void vols.set(key, null);
    const sig = await fileSignature(volPath).catch(() => undefined);
    const hit = cacheable(sig) ? cache?.get<ObservedVolume>(volumeCacheKey(v.pool, v.name), sig) : undefined;
    if (hit) vols.set(key, hit);
    else misses.push({ ...v, sig });
  }));
  if (misses.length) {
    const outputs = await virsh.batch(volumeReadCommands(misses));
    await Promise.all(misses.map(async (v, i) => {
      const xml = outputs[i];
      const obs = xml ? parseVolumeXml(v.pool, xml) : null;
      vols.set(`${v.pool}/${v.name}`, obs);
      // Cached only if the file did not change while libvirt read it.
      if (obs && cacheable(v.sig) && (await fileSignature(obs.path).catch(() => undefined)) === v.sig) cache?.set(volumeCacheKey(v.pool, v.name), v.sig, obs);
    }));
  }
  // File volumes: the file's birth time and whether the path is a symlink, looked at now
  // (never cached): ownership and "do not follow links" depend on exactly this file.
  await Promise.all([...vols].map(async ([k, o]) => {
    if (!o || o.type !== 'file' || !o.path.startsWith('/')) return;
    const l = await lstat(o.path, { bigint: true }).catch(() => undefined);
    if (!l || !(l.isFile() || l.isSymbolicLink())) return;
    const symlink = l.isSymbolicLink() ? await readlink(o.path).catch(() => '?') : undefined;
    vols.set(k, { ...o, birth: String(l.birthtimeNs), ...(symlink !== undefined ? { symlink } : {}) });
  }));
  return { pools, volumes: vols, domains, caps };
}

/**
 * Images whose publish was interrupted half-way: a multi-file vmdk whose new extents were
 * renamed in (they have the identities recorded as pending) while the descriptor at the path
 * is not the new one. The image there is broken, whatever its descriptor says.
 */
export async function interruptedPublishes(inventory: Inventory, files: Map<string, ObservedImage | null>): Promise<Set<string>> {
  const out = new Set<string>();
  await Promise.all(Object.values(inventory.objects).map(async (r) => {
    if (r.type !== 'image' || !r.pending?.extents.length) return;
    const main = files.get(r.path);
    if (main && sameIdentity(main.file, r.pending)) return;
    for (const e of r.pending.extents) {
      const now = await lstatIdentity(e.path);
      if (now && sameIdentity(now, e)) return void out.add(r.path);
    }
  }));
  return out;
}

/** After apply made or changed a file volume: remember what libvirt reported for it. */
export async function rememberVolume(cache: StatCache | undefined, obs: ObservedVolume): Promise<void> {
  const sig = await fileSignature(obs.path).catch(() => undefined);
  if (cache && cacheable(sig)) cache.set(volumeCacheKey(obs.pool, obs.name), sig, obs);
}
