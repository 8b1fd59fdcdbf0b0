// The plan is a value: `plan` builds and prints it (or saves it as JSON), `apply`
// executes exactly it. Nothing in here touches the host.
import { createHash } from 'node:crypto';
import type { FileIdentity, ImageBuild } from '../providers/image/files.js';
import type { ExtentRecord } from './inventory.js';
import type { PoolDefinition } from '../tools/libvirt-pool.js';
import type { Ownership } from '../tools/libvirt-domain.js';
import type { VolumeBuild } from '../tools/libvirt-volume.js';
import type { DiskStep } from '../providers/domain/diff.js';
import type { Format, Permissions } from './model.js';

export type ActionKind = 'create' | 'update' | 'replace' | 'delete' | 'no-op';

export interface Change {
  field: string;
  from: string;
  to: string;
}

export type Operation =
  | { type: 'image.create'; build: ImageBuild; recorded: Record<string, string> }
  | {
      type: 'image.replace';
      build: ImageBuild;
      recorded: Record<string, string>;
      /** the file the plan saw: the only one the build may replace */
      oldFile: FileIdentity;
      /** extent names the new build may take over (the old image's, as observed) */
      oldExtents: string[];
      /** extents reconcile recorded making, deleted if the new build has no file of that name */
      ownedExtents: ExtentRecord[];
    }
  | {
      type: 'image.update';
      path: string;
      /** the file the plan saw: nothing is changed if another one is at the path by then */
      expect: FileIdentity;
      followSymlink: boolean;
      format: Format;
      resize?: { size: number; preallocation?: string; encryption?: { passphraseFile: string } };
      permissions?: Permissions;
    }
  | { type: 'image.delete'; path: string; identity: FileIdentity; extents: ExtentRecord[]; inventoryKey: string; exists: boolean }
  | {
      type: 'pool.create' | 'pool.replace';
      name: string;
      definition: PoolDefinition;
      active: boolean;
      autostart: boolean;
      /** replace: the old pool is stopped and undefined first */
      wasActive?: boolean;
      secret?: { usage: string; type: 'chap' | 'ceph'; file: string };
    }
  | {
      type: 'pool.update';
      name: string;
      redefine?: PoolDefinition;
      start?: boolean;
      stop?: boolean;
      autostart?: boolean;
      chmod?: { path: string; permissions: Permissions };
      /** the pool's uuid: a redefinition must name it, or libvirt refuses it as another pool */
      uuid?: string;
    }
  | { type: 'pool.delete'; name: string; poolType: string; active: boolean; exists: boolean; inventoryKey: string }
  | {
      type: 'volume.create' | 'volume.replace';
      build: VolumeBuild;
      recorded: Record<string, string>;
      imageName: string;
      /** rebuilding an interrupted build: the file it was (birth time), checked before it is deleted */
      incomplete?: { path: string; birth?: string };
    }
  | {
      type: 'volume.update';
      pool: string;
      name: string;
      resize?: { capacity: number; allocate: boolean };
      chmod?: { path: string; permissions: Permissions };
    }
  | { type: 'volume.delete'; pool: string; name: string; exists: boolean; inventoryKey: string; path?: string; birth?: string }
  | { type: 'domain.define'; name: string; xml: string }
  | { type: 'domain.disks'; name: string; running: boolean; steps: DiskStep[]; ownership: Ownership }
  | { type: 'domain.undefine'; name: string; exists: boolean; inventoryKey: string }
  | { type: 'none' };

export interface Action {
  /** address in the YAML, e.g. images.fedora (or inventory:PATH for pruned objects) */
  id: string;
  resource: 'image' | 'pool' | 'volume' | 'domain';
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
  /** libvirt URI the plan was made against (when it involves libvirt) */
  connection?: string;
  options: { allowReplace: boolean; prune: boolean };
  /** hash of each observed object when the plan was made; apply refuses if any moved */
  observed: Record<string, string>;
  actions: Action[];
  refusals: Refusal[];
  notes: string[];
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

export function hasChanges(plan: Plan): boolean {
  return plan.actions.some((a) => a.kind !== 'no-op');
}
