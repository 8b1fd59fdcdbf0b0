// Decisions shared by every kind of storage object: size (grow / replace / refuse) and
// ownership/mode drift, and how a list of changes reads in a plan.
import type { Permissions } from '../../reconcile/model.js';
import type { Change } from '../../reconcile/plan.js';
import { formatSize } from '../../reconcile/sizes.js';

export const octal = (m?: number) => (m === undefined ? '-' : `0${(m & 0o7777).toString(8)}`);

export function reasonOf(changes: Change[]): string {
  return changes.map((c) => `${c.field} ${c.from} -> ${c.to}`).join(', ');
}

/**
 * Which fields the YAML may change: all of an object reconcile made; of an adopted one, only
 * those its own declaration sets (not defaults). A change's field is `format`, `qcow2.x`,
 * `backing` (declared as `source`), ...
 */
export function changeableBy(ours: boolean, declared: string[]): (field: string) => boolean {
  return (field) => ours || declared.includes(field === 'backing' ? 'source' : field.split('.')[0]!);
}

/** Removes from `changes` those not changeable; returns a note naming them, or undefined. */
export function keepAdopted(changes: Change[], changeable: (field: string) => boolean, what: string, name: string): string | undefined {
  const kept = changes.filter((c) => !changeable(c.field));
  changes.splice(0, changes.length, ...changes.filter((c) => changeable(c.field)));
  return kept.length ? `adopted ${what} keeps its ${kept.map((c) => `${c.field} ${c.from}`).join(', ')} (set on images.${name} itself to change it)` : undefined;
}

export type SizeDecision =
  | { kind: 'same' }
  | { kind: 'grow'; change: Change }
  | { kind: 'rebuild'; change: Change }
  | { kind: 'shrink'; from: number };

/**
 * Declared vs observed virtual size. Within `tolerance` above the declared size the object
 * is in sync (formats round up); below it grows in place when it can, or is rebuilt;
 * further above it would have to shrink, which is always refused.
 */
export function decideSize(declared: number | undefined, observed: number, tolerance: number, canGrow: boolean, kind: string): SizeDecision {
  if (declared === undefined) return { kind: 'same' };
  if (observed < declared) {
    const change = { field: 'size', from: formatSize(observed), to: formatSize(declared) };
    return canGrow ? { kind: 'grow', change } : { kind: 'rebuild', change: { ...change, to: `${change.to} (${kind} cannot grow in place)` } };
  }
  if (observed - declared >= tolerance) return { kind: 'shrink', from: observed };
  return { kind: 'same' };
}

export function permissionChanges(want: Permissions | undefined, have: { uid?: number; gid?: number; mode?: number }): Change[] {
  const ch: Change[] = [];
  if (!want) return ch;
  if (want.owner !== undefined && have.uid !== want.owner) ch.push({ field: 'owner', from: String(have.uid ?? '-'), to: String(want.owner) });
  if (want.group !== undefined && have.gid !== want.group) ch.push({ field: 'group', from: String(have.gid ?? '-'), to: String(want.group) });
  if (want.mode !== undefined && have.mode !== want.mode) ch.push({ field: 'mode', from: octal(have.mode), to: octal(want.mode) });
  return ch;
}
