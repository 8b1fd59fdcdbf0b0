// Finding image publishes a kill interrupted half-way (see createImage's publish order).
import type { Inventory } from '../../reconcile/inventory.js';
import { lstatIdentity, sameIdentity, type ObservedImage } from './files.js';

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

