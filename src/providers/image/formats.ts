// What each declared format is to qemu: its driver, whether it grows in place, and how far
// it rounds a size up.
import type { Format } from '../../reconcile/model.js';
import { DRIVER, driverOf } from '../../tools/qemu-img.js';

export { DRIVER };

/** The format name of a qemu driver, as the YAML says it (qemu calls VHD "vpc"). */
export const formatOfDriver = (driver: string): string => (driver === 'vpc' ? 'vhd' : driver);

/** The qemu driver a declared format and encryption produce (raw + LUKS is qemu's "luks"). */
export function driverFor(format: Format, encrypted: boolean): string {
  return driverOf(format, encrypted);
}

/** Formats whose qemu driver can grow an image in place. */
export function canResize(format: Format, encrypted: boolean): boolean {
  return (format === 'qcow2' || format === 'raw') && !(format === 'raw' && encrypted);
}

/**
 * How far above the requested size a format may round: qemu rounds every size up to
 * 512-byte sectors, and VHD images made by other tools round up to a CHS geometry
 * (16 heads × 255 sectors). Within this tolerance an image is in sync.
 */
export function sizeTolerance(format: Format, observedDriver?: string): number {
  // When the format changes, the existing image was rounded by its own format's rules.
  return format === 'vhd' || observedDriver === 'vpc' ? 16 * 255 * 512 + 512 : 1024;
}
