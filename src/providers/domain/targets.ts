// The names libvirt gives disk targets, by bus: on their own (no other import), so that
// validate can name a declared disk's target without loading the domain kind.
import type { DiskSpec } from '../../reconcile/model.js';

const PREFIX: Record<DiskSpec['bus'], string> = { virtio: 'vd', scsi: 'sd', sata: 'sd', ide: 'hd', nvme: 'nvme' };

/** The i-th target name of a bus: vda, vdb… (sda, hda; nvme0n1…). */
export function targetName(bus: DiskSpec['bus'], i: number): string {
  if (bus === 'nvme') return `nvme0n${i + 1}`;
  let s = '';
  let n = i;
  do {
    s = String.fromCharCode(97 + (n % 26)) + s;
    n = Math.floor(n / 26) - 1;
  } while (n >= 0);
  return PREFIX[bus] + s;
}
