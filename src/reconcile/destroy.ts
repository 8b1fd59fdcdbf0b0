// `reconcile destroy`: plan the desired state "nothing is declared" with prune. It deletes what
// prune would delete if every object had left the YAML — what reconcile created and recorded in
// the state directory's inventory, with prune's guards (still the very file or volume it made;
// never an adopted object, never a base under a declared overlay) — and nothing else. An image
// the files still declare with protect: true is never destroyed (Terraform's prevent_destroy).
import path from 'node:path';
import { recordKey } from './inventory.js';
import type { DesiredState } from './model.js';
import { makeResolver } from './paths.js';
import { orphanKey, type Plan } from './plan.js';

/**
 * The state with no object declared, keeping what says where the inventory's objects live (the
 * files' libvirt connection). Spelled out field by field rather than spread: a kind added to
 * DesiredState must fail to compile here, not be silently kept declared (and so not destroyed).
 */
export function nothingDeclared(state: DesiredState): DesiredState {
  return { connection: state.connection, files: state.files, pools: {}, images: {}, vms: {}, backups: {}, secrets: {} };
}

/**
 * Refuses the destroy plan's deletes of images the files declare with protect: true: by
 * inventory key, and for image files by what the paths resolve to, so another spelling of
 * the path (a symlinked directory, a followed symlink) protects the file as well.
 */
export function refuseProtected(plan: Plan, declared: DesiredState): void {
  const resolve = makeResolver();
  const deletes = plan.actions.filter((a) => a.kind === 'delete' && a.destructive);
  for (const spec of Object.values(declared.images)) {
    if (!spec.protect) continue;
    const loc = spec.location;
    const hit = deletes.find((a) => {
      const key = orphanKey(a.id);
      if (loc.kind === 'pool') {
        if (key === recordKey({ type: 'volume', pool: loc.pool, volume: loc.volume })) return true;
        // The same file, recorded as an image file before the YAML declared it as a volume.
        const dir = declared.pools[loc.pool]?.path;
        return dir !== undefined && key.startsWith('image:') && resolve(key.slice('image:'.length)) === resolve(path.join(dir, loc.volume));
      }
      return key.startsWith('image:') && (key === recordKey({ type: 'image', path: loc.path }) || resolve(key.slice('image:'.length)) === resolve(loc.path));
    });
    if (hit)
      plan.refusals.push({
        id: `images.${spec.name}`,
        message: `${spec.origin}: images.${spec.name} has protect: true, so destroy never deletes it (${hit.id}); remove protect: true (or the image) from the YAML first`,
      });
  }
}
