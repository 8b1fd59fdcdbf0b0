// Backup schedules carry no action from plan to apply: `backup run` and the watch service take
// backups (see src/backups/). Issue 15 turns runs and retention into actions of this kind.
export type BackupOp = never;
