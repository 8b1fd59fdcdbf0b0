// What an image action carries from plan to apply.
import type { ExtentRecord } from '../../reconcile/inventory.js';
import type { Format, Permissions, WipeAlgorithm } from '../../reconcile/model.js';
import type { FileIdentity } from '../common/files.js';
import type { ImageBuild } from './build.js';

export type ImageOp =
  /** dirs: directories reconcile made for other images that hold this one */
  | { type: 'image.create'; build: ImageBuild; recorded: Record<string, string>; dirs?: string[]; wipe?: WipeAlgorithm }
  | {
      type: 'image.replace';
      build: ImageBuild;
      recorded: Record<string, string>;
      wipe?: WipeAlgorithm;
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
      /** the record's wipe, set as declared ('none': removed); nothing on disk changes */
      wipe?: WipeAlgorithm | 'none';
    }
  | {
      type: 'image.delete';
      path: string;
      identity: FileIdentity;
      extents: ExtentRecord[];
      /** extents of a publish a kill interrupted (renamed in, descriptor not): removed if still those files */
      pendingExtents?: ExtentRecord[];
      /** directories made for it: removed if empty */
      dirs?: string[];
      inventoryKey: string;
      exists: boolean;
      /** overwrite it (zero or random) before it is unlinked, as its record says */
      wipe?: WipeAlgorithm;
    };
