// Backup schedules (kind "backup"). Backups are taken by `backup run` and the watch service,
// never by apply: a plan only says which schedules never ran or are overdue, from the record
// of their runs. Registered in providers/registry.ts.
import type { Kind } from '../../reconcile/kind.js';
import { overdue } from './diff.js';
import { executeBackup } from './execute.js';

export const backupKind: Kind = {
  resource: 'backup',
  targets: (state) => ({ backupRuns: Object.keys(state.backups).length > 0 }),
  declared: () => [],
  diff: (i) => ({
    actions: [],
    refusals: [],
    notes: i.observed.backupSuccess ? overdue(Object.values(i.state.backups), i.observed.backupSuccess, new Date(), i.observed.backupFailure) : [],
  }),
  execute: executeBackup,
};
