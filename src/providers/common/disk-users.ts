// Files and volumes that domains use as disks: never deleted under a domain. A delete may go
// ahead only after the domain itself is undefined in the same plan (reconcile made it and it
// left the YAML), or after the disk is detached in the same plan (a declared VM no longer
// lists it, and reconcile attached it).
import type { InventoryRecord } from '../../reconcile/inventory.js';
import type { DesiredState } from '../../reconcile/model.js';
import { orphanId } from '../../reconcile/plan.js';
import type { Observation } from '../observe.js';

export interface DiskUse {
  /** domains that keep using it: the delete is refused */
  blocking: string[];
  /** actions the delete must wait for (the undefine or the detach) */
  after: string[];
  /** why it cannot be told which domains use it: the delete is refused */
  unknown?: string;
}

/** `key`: the file's path, or "pool/volume"; `also`: the volume's path, if it has one. */
export function diskUse(
  key: string,
  also: string | undefined,
  identity: { dev: number; ino: number } | undefined,
  i: { state: DesiredState; inventory: { objects: Record<string, InventoryRecord> }; prune: boolean; observed: Observation },
): DiskUse {
  if (i.observed.diskUsersError) return { blocking: [], after: [], unknown: i.observed.diskUsersError };
  // By path, and by the file's identity where it is known: a domain may name the file through a
  // symlinked directory or `//` (the observation resolved those; see observe.ts).
  const keys = [key, ...(also ? [also] : []), ...(identity ? [`id:${identity.dev}:${identity.ino}`] : [])];
  const users = [...new Set(keys.flatMap((k) => i.observed.diskUsers?.get(k) ?? []))];
  const out: DiskUse = { blocking: [], after: [] };
  for (const d of users) {
    const rec = i.inventory.objects[`domain:${d}`];
    if (i.prune && rec?.type === 'domain' && !i.state.vms[d]) {
      out.after.push(orphanId(`domain:${d}`));
      continue;
    }
    const vm = i.state.vms[d];
    const dom = i.observed.domains.get(d);
    const target = dom?.exists
      ? dom.persistent.find((x) => (x.type === 'volume' ? `${x.source.pool}/${x.source.volume}` : (x.source.file ?? x.source.dev)) === key || x.source.file === also)?.target
      : undefined;
    const declared = vm?.disks.some((x) => {
      const img = x.image ? i.state.images[x.image] : undefined;
      const where = img ? (img.location.kind === 'pool' ? `${img.location.pool}/${img.location.volume}` : img.location.path) : x.path;
      return where === key || where === also;
    });
    if (vm && !declared && dom?.exists && target && dom.ownership.disks.includes(target)) {
      out.after.push(`vms.${d}`);
      continue;
    }
    out.blocking.push(d);
  }
  return out;
}
