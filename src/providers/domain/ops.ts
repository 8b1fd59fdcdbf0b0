// What a domain action carries from plan to apply.
import type { DiskDevice, DomainDefinition, Ownership } from '../../tools/libvirt-domain.js';

export type DiskStep = { verb: 'attach-device' | 'update-device' | 'detach-device'; disk: DiskDevice };

export type DomainOp =
  | { type: 'domain.define'; name: string; definition: DomainDefinition }
  /** record: finish the inventory record of a domain an interrupted apply defined */
  /** uuid: the domain the plan saw; changed only if it is still that one (not one defined under its name since) */
  | { type: 'domain.disks'; name: string; uuid: string; running: boolean; steps: DiskStep[]; ownership: Ownership; record?: boolean }
  | { type: 'domain.undefine'; name: string; uuid?: string; exists: boolean; inventoryKey: string };
