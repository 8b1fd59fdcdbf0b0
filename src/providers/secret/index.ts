// libvirt secrets (kind "secret"): registered in providers/registry.ts.
import type { Kind } from '../../reconcile/kind.js';
import { diskUse } from '../common/disk-users.js';
import { diffSecrets } from './diff.js';
import { executeSecret } from './execute.js';

export const secretKind: Kind = {
  resource: 'secret',
  targets(state, inventory) {
    const declared = Object.values(state.secrets);
    const recorded = Object.values(inventory.objects).some((r) => r.type === 'secret');
    const names = new Set(Object.keys(state.secrets));
    const orphaned = Object.values(inventory.objects).some((r) => r.type === 'secret' && !names.has(r.name));
    return {
      secrets: declared.length > 0 || recorded,
      // A secret that may be pruned: which domains still open a disk with it is looked at.
      diskUsers: orphaned,
      // The value files' sha256: a changed file is a value to set again.
      contents: declared.flatMap((s) => (s.valueFile ? [s.valueFile] : [])),
      secretFiles: declared.flatMap((s) => (s.valueFile ? [s.valueFile] : [])),
    };
  },
  declared: (state) => Object.keys(state.secrets).map((name) => ({ type: 'secret' as const, name })),
  diff: (i) =>
    diffSecrets({
      state: i.state,
      secrets: i.observed.secrets,
      contents: i.observed.contents,
      inventory: i.inventory,
      prune: i.prune,
      orphans: i.orphans,
      errors: i.observed.errors,
      diskUse: (path) => diskUse(path, undefined, undefined, i),
    }),
  execute: executeSecret,
};
