// libvirt storage pools (kind "pool"): registered in providers/registry.ts.
import type { Kind } from '../../reconcile/kind.js';
import { DIRECTORY_POOLS } from '../../reconcile/model.js';
import { diffPools } from './diff.js';
import { executePool } from './execute.js';

export const poolKind: Kind = {
  resource: 'pool',
  // A pool is pruned with the volumes pruned in the same plan.
  diffAfter: ['volume'],
  targets: (state, inventory) => ({
    pools: [...Object.keys(state.pools), ...Object.values(inventory.objects).flatMap((r) => (r.type === 'pool' ? [r.name] : []))],
    // What is at the target of a declared pool (a directory of the user's is used as it is,
    // never built over, when the pool is defined or redefined), and of one whose storage may go.
    directories: [
      ...Object.values(state.pools).flatMap((s) => (s.path && DIRECTORY_POOLS.includes(s.type) ? [s.path] : [])),
      ...Object.values(inventory.objects).flatMap((r) => (r.type === 'pool' && r.deleteStorage && r.storage === 'made' && r.path ? [r.path] : [])),
    ],
    // Pools that left the YAML and whose storage may go with them: their content as it is now.
    refreshPools: Object.values(inventory.objects).flatMap((r) =>
      r.type === 'pool' && r.deleteStorage && (r.storage === 'made' || r.filesystem) && !state.pools[r.name] ? [r.name] : [],
    ),
  }),
  declared: (state) => Object.keys(state.pools).map((name) => ({ type: 'pool' as const, name })),
  diff: (i) =>
    diffPools({
      state: i.state,
      pools: i.observed.pools,
      directories: i.observed.directories,
      inventory: i.inventory,
      allowReplace: i.allowReplace,
      prune: i.prune,
      earlier: i.earlier,
      orphans: i.orphans,
    }),
  execute: executePool,
};
