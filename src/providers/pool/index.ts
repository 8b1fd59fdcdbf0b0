// libvirt storage pools (kind "pool"): registered in providers/registry.ts.
import type { Kind } from '../../reconcile/kind.js';
import { diffPools } from './diff.js';
import { executePool } from './execute.js';

export const poolKind: Kind = {
  resource: 'pool',
  // A pool is pruned with the volumes pruned in the same plan.
  diffAfter: ['volume'],
  targets: (state, inventory) => ({
    pools: [...Object.keys(state.pools), ...Object.values(inventory.objects).flatMap((r) => (r.type === 'pool' ? [r.name] : []))],
  }),
  declared: (state) => Object.keys(state.pools).map((name) => ({ type: 'pool' as const, name })),
  diff: (i) => diffPools({ state: i.state, pools: i.observed.pools, inventory: i.inventory, allowReplace: i.allowReplace, prune: i.prune, earlier: i.earlier, orphans: i.orphans }),
  execute: executePool,
};
