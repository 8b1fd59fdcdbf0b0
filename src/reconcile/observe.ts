// Observation for a plan: every declared image path and every inventory path in one
// batched call, then source files only when a build needs their size or format.
import { observeImages, type ObservationCache, type ObservedImage } from '../providers/image-file.js';
import type { Inventory } from './inventory.js';
import type { DesiredState } from './model.js';

export function pathsToObserve(state: DesiredState, inventory: Inventory): string[] {
  const paths = new Set<string>();
  for (const spec of Object.values(state.images)) if (spec.location.kind === 'path') paths.add(spec.location.path);
  for (const rec of Object.values(inventory.objects)) if (rec.type === 'image') paths.add(rec.path);
  return [...paths].sort();
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
