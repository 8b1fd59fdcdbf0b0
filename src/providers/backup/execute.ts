// Nothing of a backup schedule is applied by apply (see ops.ts).
import type { Effect } from '../../reconcile/kind.js';
import type { Action } from '../../reconcile/plan.js';

export async function executeBackup(a: Action): Promise<Effect> {
  throw new Error(`${a.id}: backups are taken by \`reconcile backup run\` and the watch service, not by apply`);
}
