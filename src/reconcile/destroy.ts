// `reconcile destroy`: plan the desired state "nothing is declared" with prune. It deletes what
// prune would delete if every object had left the YAML — what reconcile created and recorded in
// the state directory's inventory, with prune's guards (still the very file or volume it made;
// never an adopted object, never a base under a declared overlay) — and nothing else. An image
// the files still declare with protect: true is never destroyed (Terraform's prevent_destroy).
import { recordKey } from './inventory.js';
import type { DesiredState } from './model.js';
import { orphanId, type Plan } from './plan.js';

/**
 * The state with no object declared, keeping what says where the inventory's objects live (the
 * files' libvirt connection). Spelled out field by field rather than spread: a kind added to
 * DesiredState must fail to compile here, not be silently kept declared (and so not destroyed).
 */
export function nothingDeclared(state: DesiredState): DesiredState {
  return { connection: state.connection, files: state.files, pools: {}, images: {}, vms: {}, backups: {} };
}

/** Refuses the destroy plan's deletes of images the files declare with protect: true. */
export function refuseProtected(plan: Plan, declared: DesiredState): void {
  for (const spec of Object.values(declared.images)) {
    if (!spec.protect) continue;
    const key =
      spec.location.kind === 'path'
        ? recordKey({ type: 'image', path: spec.location.path })
        : recordKey({ type: 'volume', pool: spec.location.pool, volume: spec.location.volume });
    const a = plan.actions.find((x) => x.id === orphanId(key) && x.kind === 'delete' && x.destructive);
    if (a)
      plan.refusals.push({
        id: `images.${spec.name}`,
        message: `${spec.origin}: images.${spec.name} has protect: true, so destroy never deletes it; remove protect: true (or the image) from the YAML first`,
      });
  }
}
