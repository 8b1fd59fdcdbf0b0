// The plan is a value: `plan` builds and prints it (or saves it as JSON), `apply`
// executes exactly it. Nothing in here touches the host.
import { createHash } from 'node:crypto';
import type { ImageBuild, ObservedImage } from '../providers/image-file.js';
import type { Format, Permissions } from './model.js';

export type ActionKind = 'create' | 'update' | 'replace' | 'delete' | 'no-op';

export interface Change {
  field: string;
  from: string;
  to: string;
}

export type Operation =
  | { type: 'image.create'; build: ImageBuild; recorded: Record<string, string> }
  | { type: 'image.replace'; build: ImageBuild; recorded: Record<string, string>; oldExtents: string[] }
  | {
      type: 'image.update';
      path: string;
      format: Format;
      resize?: { size: number; preallocation?: string; encryption?: { passphraseFile: string } };
      permissions?: Permissions;
    }
  | { type: 'image.delete'; path: string; extents: string[]; inventoryKey: string; exists: boolean }
  | { type: 'none' };

export interface Action {
  /** address in the YAML, e.g. images.fedora (or inventory:PATH for pruned objects) */
  id: string;
  resource: 'image';
  kind: ActionKind;
  /** one line a person reads: "size 20 GiB -> 30 GiB" */
  reason: string;
  destructive: boolean;
  changes: Change[];
  dependsOn: string[];
  op: Operation;
}

export interface Refusal {
  id: string;
  message: string;
}

export interface Plan {
  formatVersion: 1;
  createdAt: string;
  stateDir: string;
  options: { allowReplace: boolean; prune: boolean };
  /** hash of each observed object when the plan was made; apply refuses if any moved */
  observed: Record<string, string>;
  actions: Action[];
  refusals: Refusal[];
  notes: string[];
}

/** The attributes whose change invalidates a saved plan (not allocation, which moves with guest writes). */
export function observationHash(o: ObservedImage | null | undefined): string {
  if (!o) return 'absent';
  const { actualSize: _a, ...stable } = o;
  return createHash('sha256').update(JSON.stringify(stable)).digest('hex').slice(0, 16);
}

export function countByKind(actions: Action[]): Record<ActionKind, number> {
  const c: Record<ActionKind, number> = { create: 0, update: 0, replace: 0, delete: 0, 'no-op': 0 };
  for (const a of actions) c[a.kind]++;
  return c;
}

export function hasChanges(plan: Plan): boolean {
  return plan.actions.some((a) => a.kind !== 'no-op');
}
