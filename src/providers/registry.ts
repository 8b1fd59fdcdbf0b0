// Every kind reconcile manages. Adding a kind: its folder under providers/, and a line here.
// Order matters only for diffing: a kind sees the actions of the kinds before it (pools are
// pruned with the volumes pruned before them).
import type { Kind } from '../reconcile/kind.js';
import type { Resource } from '../reconcile/plan.js';
import { domainKind } from './domain/index.js';
import { imageKind } from './image/index.js';
import { poolKind } from './pool/index.js';
import { volumeKind } from './volume/index.js';

export const KINDS: readonly Kind[] = [volumeKind, imageKind, poolKind, domainKind];

export function kindOf(resource: Resource): Kind {
  const k = KINDS.find((x) => x.resource === resource);
  if (!k) throw new Error(`no kind registered for ${resource}`);
  return k;
}

/** The order kinds are listed in a plan: what holds things before what is held. */
export const DISPLAY_ORDER: readonly Resource[] = ['pool', 'image', 'volume', 'domain'];
