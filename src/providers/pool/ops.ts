// What a pool action carries from plan to apply.
import type { Permissions } from '../../reconcile/model.js';
import type { PoolDefinition } from '../../tools/libvirt-pool.js';

export type PoolOp =
  | {
      type: 'pool.create' | 'pool.replace';
      name: string;
      definition: PoolDefinition;
      active: boolean;
      autostart: boolean;
      /** replace: the pool the plan saw (its uuid), the only one that may be undefined */
      uuid?: string;
      /** replace of a pool reconcile did not define (adopted): it is not recorded as reconcile's */
      adopted?: boolean;
      /** replace: the old pool is stopped and undefined first */
      wasActive?: boolean;
      secret?: { usage: string; type: 'chap' | 'ceph'; file: string };
    }
  | {
      type: 'pool.update';
      name: string;
      /** the target's owner/group/mode as declared: set in libvirt's own definition, nothing else in it changed */
      permissions?: Permissions;
      start?: boolean;
      stop?: boolean;
      autostart?: boolean;
      chmod?: { path: string; permissions: Permissions };
      /** the pool's uuid: a redefinition must name it, or libvirt refuses it as another pool */
      uuid?: string;
    }
  /** uuid: the pool the plan saw; deleted only if it is still that one */
  | { type: 'pool.delete'; name: string; uuid?: string; poolType: string; active: boolean; exists: boolean; inventoryKey: string };
