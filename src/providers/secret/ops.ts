// What a secret action carries from plan to apply. Never the value, nor a hash of it (a plan
// printed in a CI log would let anyone check a guess): the file it is read from, and the stat
// signature the plan saw, which the apply checks before it sets what it read.
import type { SecretDefinition } from '../../tools/libvirt-secret.js';

/** Where the value comes from: read by the apply, checked against what the plan saw. */
export interface SecretValue {
  file: string;
  encoding: 'raw' | 'base64';
  signature: string;
  /**
   * The encrypted image this passphrase opens: checked to open it before it is set (if the
   * image is there); if it does not, an image reconcile made is re-keyed to it in place first.
   */
  opens?: { path: string; format: 'qcow2' | 'raw'; rekey: boolean; iterTime?: number; previousFile?: string };
}

export type SecretOp =
  | {
      type: 'secret.create';
      name: string;
      /** the uuid is chosen by the apply and recorded before the define */
      definition: Omit<SecretDefinition, 'uuid'>;
      value?: SecretValue;
      /** a replace: the secret of the old usage, undefined first (only if still that uuid) */
      replaces?: string;
    }
  | {
      type: 'secret.update';
      name: string;
      uuid: string;
      /** what it is used for, as its record keeps it */
      usage: string;
      usageId: string;
      /** redefined (same uuid and usage) with this description */
      definition?: SecretDefinition;
      value?: SecretValue;
      adopted: boolean;
      /** an interrupted create: its record is finished */
      finish?: boolean;
      /** the record it had under its old name (moved to this one) */
      movedFrom?: string;
    }
  | { type: 'secret.delete'; name: string; uuid: string; exists: boolean; inventoryKey: string };
