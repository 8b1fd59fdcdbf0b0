// Published copies of images in object storage (kind "publish"): registered in providers/registry.ts.
import type { Kind } from '../../reconcile/kind.js';
import { diffPublish } from './diff.js';
import { executePublish } from './execute.js';

export const publishKind: Kind = {
  resource: 'publish',
  diffAfter: ['image'],
  targets(state, inventory) {
    const declared = Object.values(state.images).flatMap((s) => (s.location.kind === 'path' ? s.publish : []));
    // Targets that left the YAML too: a prune deletes only what still holds reconcile's upload.
    const left = Object.values(inventory.objects).flatMap((r) => (r.type === 'publish' && !declared.some((t) => t.to === r.to) ? [{ ...r.target, origin: '' }] : []));
    const remotes = [...declared, ...left];
    const digests = Object.values(state.images).flatMap((s) => (s.location.kind === 'path' && s.publish.length ? [s.location.path] : []));
    return { remotes, digests };
  },
  declared: (state) => Object.values(state.images).flatMap((s) => (s.location.kind === 'path' ? s.publish.map((t) => ({ type: 'publish' as const, to: t.to })) : [])),
  diff: (i) =>
    diffPublish({
      state: i.state,
      remotes: i.observed.remotes ?? new Map(),
      digests: i.observed.digests ?? new Map(),
      errors: i.observed.errors,
      earlier: i.earlier,
      records: i.inventory.objects,
      orphans: i.orphans,
      prune: i.prune,
    }),
  execute: executePublish,
};
