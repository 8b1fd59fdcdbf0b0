// Finding image publishes a kill interrupted half-way (see createImage's publish order). Pure:
// the identities of recorded pending extents are observed up front (Targets.identities).
import type { Inventory } from '../../reconcile/inventory.js';
import type { Observed } from '../observe.js';
import { sameIdentity, type FileIdentity } from '../common/files.js';
import type { ObservedImage } from './observe.js';

/** The extent files of interrupted publishes: what must be looked at to find them. */
export function pendingExtentPaths(inventory: Inventory): string[] {
  return Object.values(inventory.objects).flatMap((r) => (r.type === 'image' && r.pending ? r.pending.extents.map((e) => e.path) : []));
}

/**
 * Images whose publish was interrupted half-way: a multi-file vmdk whose new extents were
 * renamed in (they have the identities recorded as pending) while the descriptor at the path
 * is not the new one. The image there is broken, whatever its descriptor says.
 */
export function interruptedPublishes(inventory: Inventory, files: Map<string, Observed<ObservedImage>>, identities: Map<string, FileIdentity | null>): Set<string> {
  const out = new Set<string>();
  for (const r of Object.values(inventory.objects)) {
    if (r.type !== 'image' || !r.pending?.extents.length) continue;
    const main = files.get(r.path);
    if (main?.exists && sameIdentity(main.file, r.pending)) continue;
    const pending = r.pending;
    if (
      pending.extents.some((e) => {
        const now = identities.get(e.path);
        return now && sameIdentity(now, e);
      })
    )
      out.add(r.path);
  }
  return out;
}
