// Which backup modes can work for which disks (checked by plan and again by each run).
import { describe, expect, it } from 'vitest';
import { modeConflicts, modeProblems, type BackupDisk } from '../../src/providers/backup/modes.js';
import { consecutiveFailures } from '../../src/backups/suspension.js';

const disk = (target: string, format: string, more: Partial<BackupDisk> = {}): BackupDisk => ({ target, format, encrypted: false, readonly: false, ...more });
const qcow2 = [disk('vda', 'qcow2'), disk('vdb', 'qcow2')];
const mixed = [disk('vda', 'qcow2'), disk('vdb', 'raw')];

describe('backup modes against disks', () => {
  it('snapshot needs every writable disk in qcow2 and cannot leave one out', () => {
    expect(modeProblems({ vm: 'db', mode: 'snapshot' }, qcow2)).toEqual([]);
    expect(modeProblems({ vm: 'db', mode: 'snapshot' }, mixed)).toEqual([expect.stringMatching(/cannot include disk vdb of db: it is raw/)]);
    expect(modeProblems({ vm: 'db', mode: 'snapshot', disks: ['vda'] }, qcow2)).toEqual([expect.stringMatching(/`disks:` leaves out vdb/)]);
    // A read-only raw disk (an installer image) is not part of an internal snapshot.
    expect(modeProblems({ vm: 'db', mode: 'snapshot' }, [disk('vda', 'qcow2'), disk('vdb', 'raw', { readonly: true })])).toEqual([]);
  });

  it('incremental needs the disks it backs up in qcow2, unencrypted; disks: leaves the others out', () => {
    expect(modeProblems({ vm: 'db', mode: 'incremental' }, mixed)).toEqual([expect.stringMatching(/cannot back up disk vdb of db: it is raw/)]);
    expect(modeProblems({ vm: 'db', mode: 'incremental', disks: ['vda'] }, mixed)).toEqual([]);
    expect(modeProblems({ vm: 'db', mode: 'incremental' }, [disk('vda', 'qcow2', { encrypted: true })])).toEqual([expect.stringMatching(/encrypted disks/)]);
  });

  it('copy and external work for any disk', () => {
    for (const mode of ['copy', 'external'] as const) expect(modeProblems({ vm: 'db', mode }, [...mixed, disk('vdc', 'vmdk', { encrypted: true })])).toEqual([]);
  });

  it('snapshot and incremental schedules cannot share a VM (libvirt: no internal snapshot while checkpoints exist)', () => {
    const specs = [
      { name: 'snap', vm: 'db', mode: 'snapshot' as const },
      { name: 'inc', vm: 'db', mode: 'incremental' as const },
      { name: 'other', vm: 'web', mode: 'snapshot' as const },
      { name: 'copy', vm: 'db', mode: 'copy' as const },
    ];
    expect(modeConflicts(specs)).toEqual([{ name: 'snap', message: expect.stringMatching(/cannot share vm db with mode incremental \(backups\.inc\)/) }]);
  });

  it('consecutive failures count back from the newest run to the last success', () => {
    const r = (at: string, status?: 'failed') => ({ schedule: 's', at, status });
    expect(consecutiveFailures([r('1', 'failed'), r('2'), r('3', 'failed'), r('4', 'failed')], 's')).toBe(2);
    expect(consecutiveFailures([r('1'), r('2')], 's')).toBe(0);
    expect(consecutiveFailures([], 's')).toBe(0);
  });
});
