// The plan is a value: `plan` builds and prints it (or saves it as JSON), `apply`
// executes exactly it. Nothing in here touches the host.
import { createHash } from 'node:crypto';

export type ActionKind = 'create' | 'update' | 'replace' | 'delete' | 'no-op';
export type Resource = 'secret' | 'image' | 'pool' | 'volume' | 'domain' | 'backup' | 'publish';

/** Why an action is in the plan, for programs; `reason` says it for people. */
export type ReasonCode =
  | 'new' // the object does not exist
  | 'in-sync'
  | 'in-sync-adopted' // exists, matches, and reconcile did not create it (never deleted)
  | 'drift' // changed in place (size, permissions, settings, attached disks)
  | 'rebuild' // must be made again (format, options, source, type changed)
  | 'interrupted' // an earlier apply was killed while making it: finished now
  | 'left-yaml' // reconcile made it and the YAML no longer declares it (prune)
  | 'gone' // pruned object already gone: only forgotten
  | 'not-ours'; // another object took its place: forgotten, never deleted

export interface Change {
  field: string;
  /** '' for a create: the value is new */
  from: string;
  to: string;
}

/** An operation is its kind's own value: only that kind builds and reads it. */
export interface Operation {
  type: string;
}

export interface Action<Op extends Operation = Operation> {
  /** address in the YAML, e.g. images.fedora (or inventory:KEY for pruned objects, see orphanId) */
  id: string;
  resource: Resource;
  kind: ActionKind;
  code: ReasonCode;
  /** one line a person reads: "size 20 GiB -> 30 GiB" */
  reason: string;
  destructive: boolean;
  /** waits for a maintenance window though it destroys nothing (a running VM's change that takes effect at its restart) */
  disruptive?: boolean;
  /** per field: for a create the options it applies, for an update or replace what changes */
  changes: Change[];
  dependsOn: string[];
  op: Op;
}

export const isReplace = (a: Pick<Action, 'kind'>) => a.kind === 'replace';
/**
 * Loses data, or deletes or replaces an object (even one only forgotten): shown in red, and
 * on a terminal apply asks before doing it.
 */
export const isDestructive = (a: Pick<Action, 'kind' | 'destructive'>) => a.destructive || a.kind === 'delete' || isReplace(a);
export const isChange = (a: Pick<Action, 'kind'>) => a.kind !== 'no-op';

/** An object that matches its declaration; `ours`: reconcile made it (else it was adopted and is never deleted). */
export function inSync(
  resource: Resource,
  id: string,
  ours: boolean,
  reason = ours ? 'in sync' : 'in sync (adopted: reconcile did not create it and never deletes it)',
): Action<NoOp> {
  return { id, resource, kind: 'no-op', code: ours ? 'in-sync' : 'in-sync-adopted', reason, destructive: false, changes: [], dependsOn: [], op: NO_OP };
}

/** The plan-wide id of a pruned object: its inventory key (one spelling for every kind). */
export const orphanId = (inventoryKey: string) => `inventory:${inventoryKey}`;
/** The inventory key a pruned object's id names (the inverse of orphanId). */
export const orphanKey = (id: string) => id.replace(/^inventory:/, '');

export interface Refusal {
  id: string;
  message: string;
}

export interface Plan {
  formatVersion: 1;
  createdAt: string;
  stateDir: string;
  /** libvirt URI the plan was made against (when it involves libvirt) */
  connection?: string;
  /** outsideWindow: made without waiting for a maintenance window */
  options: { allowReplace: boolean; prune: boolean; outsideWindow?: boolean };
  /** hash of each observed object when the plan was made; apply refuses if any moved */
  observed: Record<string, string>;
  actions: Action[];
  refusals: Refusal[];
  notes: string[];
  /** disruptive actions (and what depends on them) held back until a maintenance window opens */
  waiting?: Waiting[];
}

export interface Waiting {
  id: string;
  kind: ActionKind;
  reason: string;
  destructive: boolean;
  /** held only because it depends on these */
  because?: string[];
  /** when the next window opens (ISO time) */
  opensAt?: string;
}

/**
 * The attributes whose change invalidates a saved plan: not allocation or free space,
 * which move with every guest write.
 */
export function observationHash(o: object | null | undefined): string {
  if (!o) return 'absent';
  const { actualSize: _a, allocation: _b, available: _c, volumes: _d, ...stable } = o as Record<string, unknown>;
  return createHash('sha256').update(JSON.stringify(stable)).digest('hex').slice(0, 16);
}

export function countByKind(actions: Action[]): Record<ActionKind, number> {
  const c: Record<ActionKind, number> = { create: 0, update: 0, replace: 0, delete: 0, 'no-op': 0 };
  for (const a of actions) c[a.kind]++;
  return c;
}

/** The one answer to "would apply change anything?" (CLI exit codes, apply, watch). */
export function hasChanges(plan: Pick<Plan, 'actions'>): boolean {
  return plan.actions.some(isChange);
}

/** Changes now, or held back for a maintenance window: what `plan --detailed-exitcode` reports. */
export function hasPendingChanges(plan: Pick<Plan, 'actions' | 'waiting'>): boolean {
  return hasChanges(plan) || !!plan.waiting?.length;
}

export type NoOp = { type: 'none' };
/** The operation of an action with nothing to do. */
export const NO_OP: NoOp = { type: 'none' };
