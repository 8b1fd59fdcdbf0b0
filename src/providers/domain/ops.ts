// What a domain action carries from plan to apply.
import type { DiskDevice, DomainDefinition, Ownership } from '../../tools/libvirt-domain.js';

export type DiskStep = { verb: 'attach-device' | 'update-device' | 'detach-device'; disk: DiskDevice };

export type DomainOp =
  | { type: 'domain.define'; name: string; definition: DomainDefinition }
  /** record: finish the inventory record of a domain an interrupted apply defined */
  | { type: 'domain.disks'; name: string; running: boolean; steps: DiskStep[]; ownership: Ownership; record?: boolean }
  | { type: 'domain.undefine'; name: string; exists: boolean; inventoryKey: string };
