// The part of a plan that can go ahead while some objects are refused: the watch service
// heals everything that does not depend on a refused object (one image grown by hand must
// not stop a deleted volume from coming back). `apply` on the command line stays
// all-or-nothing, as CI wants.
import { sourceImage, type DesiredState } from './model.js';
import { isChange, type Plan } from './plan.js';

/** What each declared object needs before it can be built: its source image, its pool, a VM's disks. */
export function declaredDependencies(state: DesiredState): Map<string, string[]> {
  const deps = new Map<string, string[]>();
  for (const img of Object.values(state.images)) {
    const d: string[] = [];
    const src = sourceImage(img.source);
    if (src) d.push(`images.${src}`);
    if (img.location.kind === 'pool') d.push(`pools.${img.location.pool}`);
    deps.set(`images.${img.name}`, d);
  }
  for (const vm of Object.values(state.vms))
    deps.set(
      `vms.${vm.name}`,
      vm.disks.filter((dk) => dk.image).map((dk) => `images.${dk.image}`),
    );
  return deps;
}

/**
 * The plan without its refusals and without every action that depends, directly or
 * through others, on a refused object; `blocked` lists those held back, each with the
 * refused object it waits for.
 */
export function withoutRefused(plan: Plan, state: DesiredState): { plan: Plan; blocked: { id: string; because: string }[] } {
  const deps = declaredDependencies(state);
  // Each stuck object, with the refused object at the root of its chain.
  const stuck = new Map(plan.refusals.map((r) => [r.id, r.id]));
  for (let grew = true; grew; ) {
    grew = false;
    for (const [id, needs] of deps) {
      const cause = needs.find((n) => stuck.has(n));
      if (!stuck.has(id) && cause) {
        stuck.set(id, stuck.get(cause)!);
        grew = true;
      }
    }
  }
  const blocked = plan.actions.filter((a) => isChange(a) && stuck.has(a.id) && stuck.get(a.id) !== a.id).map((a) => ({ id: a.id, because: stuck.get(a.id)! }));
  return { plan: { ...plan, refusals: [], actions: plan.actions.filter((a) => !stuck.has(a.id)) }, blocked };
}
