// Backup schedules (kind "backup"). Backups are taken by `backup run` and the watch service,
// never by apply: a plan says which schedules never ran, are overdue or suspended (from the
// record of their runs), and refuses a schedule whose mode cannot work for its VM's disks.
// Registered in providers/registry.ts.
import type { Kind } from '../../reconcile/kind.js';
import { overdue, suspendedNotes } from './diff.js';
import { executeBackup } from './execute.js';
import { backupDisk, declaredDisks, modeConflicts, modeProblems, type BackupDisk } from './modes.js';
import { present } from '../observe.js';
import type { ObservedDomain } from '../../tools/libvirt-domain.js';

/** The disks a schedule's VM has: as libvirt has them, or (not defined yet) as declared. */
const vmDisks = (state: Parameters<typeof declaredDisks>[0], vm: string, domain: ObservedDomain | undefined): BackupDisk[] =>
  domain ? domain.persistent.filter((d) => d.device === 'disk' && d.type !== 'network').map(backupDisk) : declaredDisks(state, vm);

export const backupKind: Kind = {
  resource: 'backup',
  targets: (state) => ({ backupRuns: Object.keys(state.backups).length > 0 }),
  declared: () => [],
  diff: (i) => {
    const specs = Object.values(i.state.backups);
    const refusals = [
      ...specs.flatMap((s) => modeProblems(s, vmDisks(i.state, s.vm, present(i.observed.domains.get(s.vm)))).map((message) => ({ id: `backups.${s.name}`, message }))),
      ...modeConflicts(specs).map((c) => ({ id: `backups.${c.name}`, message: c.message })),
    ];
    const notes = i.observed.backupSuccess ? overdue(specs, i.observed.backupSuccess, new Date(), i.observed.backupFailure) : [];
    const restoring = i.observed.backupRestoring;
    const interrupted = restoring
      ? [
          `the restore of ${restoring.id} into ${restoring.vm} was interrupted: the next \`reconcile restore\` or \`backup run\` puts ${restoring.asides.map((a) => a.source).join(', ') || 'its images'} back as before it (kept as ${restoring.asides.map((a) => a.aside).join(', ') || '-'})`,
        ]
      : [];
    const declared = new Set(specs.map((s) => s.name));
    const bad = (i.observed.backupBadCopies ?? []).filter((b) => declared.has(b.schedule)).map((b) => `backups.${b.schedule}: backup ${b.id} FAILED verification: ${b.error}`);
    return { actions: [], refusals, notes: [...interrupted, ...suspendedNotes(specs, i.observed.backupSuspended), ...bad, ...notes] };
  },
  execute: executeBackup,
};
