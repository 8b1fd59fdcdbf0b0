// Every kind reconcile manages, in the order a plan lists them (what holds things before
// what is held). Adding a kind: its folder under providers/, and a line here.
import type { Kind } from '../reconcile/kind.js';
import type { Resource } from '../reconcile/plan.js';
import { backupKind } from './backup/index.js';
import { domainKind } from './domain/index.js';
import { imageKind } from './image/index.js';
import { poolKind } from './pool/index.js';
import { publishKind } from './publish/index.js';
import { secretKind } from './secret/index.js';
import { volumeKind } from './volume/index.js';

export const KINDS: readonly Kind[] = [secretKind, poolKind, imageKind, volumeKind, publishKind, domainKind, backupKind];

export function kindOf(resource: Resource): Kind {
  const k = KINDS.find((x) => x.resource === resource);
  if (!k) throw new Error(`no kind registered for ${resource}`);
  return k;
}
