// Decisions shared by every kind of storage object: size (grow / replace / refuse) and
// ownership/mode drift, and how a list of changes reads in a plan.
import type { ImageSpec, Permissions, WipeAlgorithm } from '../../reconcile/model.js';
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

export type SizeDecision = { kind: 'same' } | { kind: 'grow'; change: Change } | { kind: 'rebuild'; change: Change } | { kind: 'shrink'; from: number };

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

/**
 * May an object be replaced (its data lost)? Never with protect: true, only with
 * --allow-replace, never under an overlay. An object an interrupted apply left incomplete
 * is rebuilt regardless: it holds nothing yet, and its replace was allowed when it started.
 * Returns the refusal, or undefined.
 */
export function replaceRefusal(o: {
  origin: string;
  /** "/var/lib/x.qcow2", "volume v in pool p" */
  what: string;
  rebuild: Change[];
  protect: boolean;
  allowReplace: boolean;
  incomplete: boolean;
  /** declared images that are overlays on it */
  overlays: string[];
}): string | undefined {
  const why = reasonOf(o.rebuild);
  if (o.protect && !o.incomplete) return `${o.origin}: ${o.what} would be replaced (${why}), but the image has protect: true`;
  if (!o.allowReplace && !o.incomplete)
    return `${o.origin}: ${o.what} must be rebuilt (${why}); this replaces ${o.what.startsWith('/') ? 'the image' : 'it'} and its data. Re-run with --allow-replace to allow it`;
  if (o.overlays.length)
    return `${o.origin}: ${o.what} must be rebuilt (${why}), but ${o.overlays.join(', ')} ${o.overlays.length > 1 ? 'are overlays' : 'is an overlay'} on it and would be corrupted; rebuild or remove ${o.overlays.length > 1 ? 'those overlays' : 'that overlay'} first`;
  return undefined;
}

/** A create's changes: every value it sets, from nothing ("+ field: value" in a plan). */
export function created(fields: Record<string, string | number | boolean | undefined>): Change[] {
  return Object.entries(fields)
    .filter(([, v]) => v !== undefined && v !== '')
    .map(([field, v]) => ({ field, from: '', to: String(v) }));
}

/** What a new image or volume is made with: its format and the options it applies. */
export function imageOptions(spec: ImageSpec): Record<string, string | number | boolean | undefined> {
  const q = spec.format === 'qcow2' ? (spec.qcow2 ?? {}) : undefined;
  return {
    format: spec.format,
    ...(q
      ? {
          'qcow2.compat': q.compat ?? '1.1',
          'qcow2.clusterSize': q.clusterSize !== undefined ? formatSize(q.clusterSize) : undefined,
          'qcow2.compression': q.compression,
          'qcow2.compressed': q.compressed,
          'qcow2.preallocation': q.preallocation,
          'qcow2.lazyRefcounts': q.lazyRefcounts,
          'qcow2.refcountBits': q.refcountBits,
          'qcow2.extendedL2': q.extendedL2,
        }
      : {}),
    'vmdk.subformat': spec.format === 'vmdk' ? spec.vmdk?.subformat : undefined,
    'vmdk.adapterType': spec.format === 'vmdk' ? spec.vmdk?.adapterType : undefined,
    'vhd.subformat': spec.format === 'vhd' ? (spec.vhd?.subformat ?? 'dynamic') : undefined,
    'vhdx.subformat': spec.format === 'vhdx' ? spec.vhdx?.subformat : undefined,
    encryption: spec.encryption ? 'luks' : undefined,
  };
}

/**
 * The hint added when an object exists that reconcile did not make, and the inventory is
 * empty: that is often another state directory than the one that made it.
 */
export function stateDirHint(inventory: { objects: Record<string, unknown> }): string {
  return Object.keys(inventory.objects).length ? '' : '. This state directory records nothing: if reconcile made it, use the state directory that did (--state-dir)';
}

/**
 * The record's wipe against the declaration: a change is only the record's (nothing on disk),
 * shown in the plan so that what a later prune will do is never a surprise.
 */
export function wipeChange(recorded: WipeAlgorithm | undefined, declared: WipeAlgorithm | undefined): { change: Change; set: WipeAlgorithm | 'none' } | undefined {
  if ((recorded ?? 'none') === (declared ?? 'none')) return undefined;
  return { change: { field: 'wipe', from: recorded ?? 'none', to: declared ?? 'none' }, set: declared ?? 'none' };
}
