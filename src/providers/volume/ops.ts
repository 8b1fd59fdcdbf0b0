// What a volume action carries from plan to apply.
import type { Permissions, WipeAlgorithm } from '../../reconcile/model.js';
import type { VolumeBuild } from '../../tools/libvirt-volume.js';

export type VolumeOp =
  | {
      type: 'volume.create' | 'volume.replace';
      build: VolumeBuild;
      recorded: Record<string, string>;
      imageName: string;
      /** rebuilding an interrupted build: the file it was (birth time), checked before it is deleted */
      incomplete?: { path: string; birth?: string };
      /** file pools: the path the volume will have (its key), recorded before it exists */
      expectedPath?: string;
      /** recorded with it: vol-wipe before reconcile ever deletes it */
      wipe?: WipeAlgorithm;
      /** a replace: the old volume is wiped so before it is deleted (its record said so) */
      wipeOld?: WipeAlgorithm;
      /** a replace: the old volume's file (file pools) as recorded, the only one wiped */
      old?: { path: string; birth?: string };
    }
  | {
      type: 'volume.update';
      pool: string;
      name: string;
      resize?: { capacity: number; allocate: boolean };
      chmod?: { path: string; permissions: Permissions };
      /** the record's wipe, set as declared ('none': removed) */
      wipe?: WipeAlgorithm | 'none';
      inventoryKey?: string;
    }
  | { type: 'volume.delete'; pool: string; name: string; exists: boolean; inventoryKey: string; path?: string; birth?: string; wipe?: WipeAlgorithm };
