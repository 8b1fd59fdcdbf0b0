// Which backup modes can work for which disks: checked at plan time (against the domain as it
// is, or as declared) and again when a run starts. Pure.
import type { BackupSpec, DesiredState } from '../../reconcile/model.js';
import type { DiskDevice } from '../../tools/libvirt-domain.js';
import { targetName } from '../domain/targets.js';

export interface BackupDisk {
  target: string;
  /** qemu format of the disk (qcow2, raw…), if known */
  format?: string;
  encrypted: boolean;
  readonly: boolean;
}

/** A disk as libvirt has it (a disk without a driver type is raw). */
export const backupDisk = (d: DiskDevice): BackupDisk => ({ target: d.target, format: d.driverType ?? 'raw', encrypted: !!d.encryption, readonly: d.readonly });

/** A VM's disks as the YAML declares them (targets as the domain will get them: declared, else the next free one of the bus). */
export function declaredDisks(state: Pick<DesiredState, 'vms' | 'images'>, vm: string): BackupDisk[] {
  const declared = state.vms[vm]?.disks ?? [];
  const used = new Set(declared.map((d) => d.target).filter(Boolean));
  return declared.flatMap((d) => {
    let target = d.target;
    for (let i = 0; !target; i++) {
      const t = targetName(d.bus, i);
      if (used.has(t)) continue;
      target = t;
      used.add(t);
    }
    const img = d.image ? state.images[d.image] : undefined;
    return d.device === 'disk' && !d.network ? [{ target, format: img?.format, encrypted: !!img?.encryption, readonly: d.readonly }] : [];
  });
}

/** What stops this schedule's mode from working on these disks (the domain's disks, CD-ROMs and network disks left out). */
export function modeProblems(spec: Pick<BackupSpec, 'mode' | 'disks' | 'vm'>, disks: BackupDisk[]): string[] {
  const out: string[] = [];
  const chosen = spec.disks ? disks.filter((d) => spec.disks!.includes(d.target)) : disks;
  // Incremental is advice only where every chosen disk is qcow2 (it tracks changes in qcow2 bitmaps).
  const allQcow2 = chosen.every((d) => d.format === undefined || d.format === 'qcow2');
  const other = spec.mode === 'snapshot' ? ` Use mode copy or external${allQcow2 ? ', or incremental (with `disks:` to choose the disks)' : ''}.` : '';
  if (spec.mode === 'snapshot') {
    // libvirt takes every writable disk into an internal snapshot and refuses snapshot='no' for
    // one ("disk 'vdb' must use snapshot mode 'internal'"): `disks:` cannot leave one out.
    const left = disks.filter((d) => !d.readonly && !chosen.includes(d));
    if (left.length)
      out.push(
        `mode snapshot takes every disk of ${spec.vm} (libvirt cannot leave a disk out of an internal snapshot); \`disks:\` leaves out ${left.map((d) => d.target).join(', ')}.${other}`,
      );
    for (const d of disks.filter((x) => !x.readonly && x.format !== undefined && x.format !== 'qcow2'))
      out.push(`mode snapshot cannot include disk ${d.target} of ${spec.vm}: it is ${d.format}, and internal snapshots need qcow2. Use mode copy or external.`);
  }
  if (spec.mode === 'incremental') {
    for (const d of chosen) {
      if (d.format !== undefined && d.format !== 'qcow2')
        out.push(
          `mode incremental cannot back up disk ${d.target} of ${spec.vm}: it is ${d.format}, and changes are tracked in qcow2 dirty bitmaps. Use mode copy for it, or leave it out with \`disks:\`.`,
        );
      else if (d.encrypted) out.push(`mode incremental does not back up encrypted disks yet (disk ${d.target} of ${spec.vm}); mode copy makes encrypted copies of them.`);
    }
  }
  return out;
}

/**
 * Schedules that cannot share a VM: libvirt refuses internal snapshots (and reverting to one)
 * while the domain has checkpoints, which incremental schedules keep.
 */
export function modeConflicts(specs: Pick<BackupSpec, 'name' | 'vm' | 'mode'>[]): { name: string; message: string }[] {
  const out: { name: string; message: string }[] = [];
  for (const s of specs.filter((x) => x.mode === 'snapshot')) {
    const inc = specs.filter((x) => x.vm === s.vm && x.mode === 'incremental').map((x) => x.name);
    if (inc.length)
      out.push({
        name: s.name,
        message: `mode snapshot cannot share vm ${s.vm} with mode incremental (${inc.map((n) => `backups.${n}`).join(', ')}): libvirt refuses internal snapshots, and reverting to one, while the domain has checkpoints. Use mode copy or external for this schedule.`,
      });
  }
  return out;
}
