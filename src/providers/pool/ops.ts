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
      /** pool-build when defined (never over a directory that is there already: see execute) */
      build: boolean;
      /** recorded, for when the pool is pruned */
      deleteStorage: boolean;
      /** the plan saw a directory at the target already (the user's: recorded as found) */
      targetFound?: boolean;
      /** the YAML adopts what is at the target: declared permissions may be set on it */
      adoptTarget?: boolean;
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
      /** starting it builds it first (unless its storage was found, or build: false) */
      build?: boolean;
      /** the record's deleteStorage, set as declared (nothing in libvirt changes) */
      deleteStorage?: boolean;
    }
  /**
   * uuid: the pool the plan saw; undefined only if it is still that one. deleteStorage: its
   * storage goes too (libvirt's pool-delete), checked empty again first.
   */
  | {
      type: 'pool.delete';
      name: string;
      uuid?: string;
      poolType: string;
      active: boolean;
      exists: boolean;
      inventoryKey: string;
      deleteStorage?: boolean;
      /** a directory pool's directory as reconcile made it: kept if another is there now */
      storage?: { path: string; birth: string };
      /** an fs pool's filesystem reconcile made: its signature erased (wipefs) if it is still that one */
      filesystem?: { device: string; type: string; uuid: string };
      /** where the pool is mounted (fs): looked at before its filesystem goes */
      target?: string;
    };
