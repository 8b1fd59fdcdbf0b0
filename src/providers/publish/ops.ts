// What a publish action carries from plan to apply.
import type { PublishTarget } from '../../reconcile/model.js';

/** A target as recorded: no origin (the YAML that declared it may be gone by prune time). */
export type RecordedTarget = Omit<PublishTarget, 'origin'>;

export type PublishOp =
  /** the image's file to the target; sha256: its digest when the plan saw it (undefined: built in this apply) */
  | { type: 'publish.upload'; image: string; path: string; target: RecordedTarget; sha256?: string; inventoryKey: string }
  /** the object reconcile published, if it still holds what it uploaded (sha256) */
  | { type: 'publish.delete'; target: RecordedTarget; sha256?: string; inventoryKey: string };
