// Published copies of images (`publish:`) vs the objects found at their targets: upload what
// is missing or holds another version of the image, leave alone what reconcile did not put
// there, delete on prune only what the YAML said may be pruned. Pure: no I/O.
import { recordKey, type PublishRecord, type InventoryRecord } from '../../reconcile/inventory.js';
import type { DesiredState } from '../../reconcile/model.js';
import { inSync, orphanId, type Action, type Refusal } from '../../reconcile/plan.js';
import { remoteErrorKey, type RemoteObject } from '../../publish/place.js';
import type { PublishOp, RecordedTarget } from './ops.js';
import { whose } from './ownership.js';

/** A target's id in a plan (its inventory key is recordKey's, the same text). */
export const publishId = (to: string) => `publish:${to}`;

export interface PublishDiffInput {
  state: DesiredState;
  /** what HEAD found at each target (null: nothing); a target missing here could not be read (errors say why) */
  remotes: Map<string, RemoteObject | null>;
  /** sha256 of each declared image file with targets, as it is now */
  digests: Map<string, string>;
  errors: Map<string, string>;
  /** the image actions of this plan (a build or resize changes what is published) */
  earlier: Action[];
  records: Record<string, InventoryRecord>;
  orphans: [string, InventoryRecord][];
  prune: boolean;
}

const strip = ({ origin: _o, ...t }: { origin: string } & RecordedTarget): RecordedTarget => t;

export function diffPublish(i: PublishDiffInput): { actions: Action<PublishOp | { type: 'none' }>[]; refusals: Refusal[]; notes: string[] } {
  const actions: Action<PublishOp | { type: 'none' }>[] = [];
  const refusals: Refusal[] = [];
  const notes: string[] = [];
  const owners = new Map<string, string>();
  for (const spec of Object.values(i.state.images)) {
    if (spec.location.kind !== 'path' || !spec.publish.length) continue;
    const path = spec.location.path;
    const imageId = `images.${spec.name}`;
    const built = i.earlier.find((a) => a.id === imageId && (a.kind === 'create' || a.kind === 'replace' || (a.kind === 'update' && a.changes.some((c) => c.field === 'size'))));
    const imageRefused = !built && !i.digests.has(path);
    for (const t of spec.publish) {
      const id = publishId(t.to);
      const key = recordKey({ type: 'publish', to: t.to });
      const other = owners.get(t.to);
      if (other) {
        refusals.push({ id, message: `${t.origin}: ${t.to} is published by images.${other} too; one object holds one image` });
        continue;
      }
      owners.set(t.to, spec.name);
      const stored = i.records[key];
      const rec = stored?.type === 'publish' ? stored : undefined;
      const remote = i.remotes.get(t.to);
      const upload = (kind: 'create' | 'update', reason: string, sha256?: string): void => {
        actions.push({
          id,
          resource: 'publish',
          kind,
          code: kind === 'create' ? 'new' : 'drift',
          reason,
          destructive: false,
          changes: [{ field: 'sha256', from: remote?.sha256 ?? (kind === 'create' ? '' : 'unknown'), to: sha256 ?? `as ${imageId} is built` }],
          dependsOn: built ? [imageId] : [],
          op: { type: 'publish.upload', image: spec.name, path, target: strip(t), sha256, inventoryKey: key },
        });
      };
      const refuse = (why: string) => refusals.push({ id, message: `${t.origin}: ${why}` });
      if (!i.remotes.has(t.to) && !built && imageRefused) continue; // the image is missing or refused: its own action says why
      if (!i.remotes.has(t.to)) {
        upload(
          'update',
          `${i.errors.get(remoteErrorKey(t.to)) ?? 'the object could not be read'}; apply reads it again and uploads unless it holds this image`,
          i.digests.get(path),
        );
        continue;
      }
      const digest = i.digests.get(path);
      if (remote && !built && remote.sha256 === digest) {
        // The same image: in sync, whoever put it there; a changed prune: is recorded.
        if (rec && rec.prune !== t.prune) upload('update', `prune: ${rec.prune} -> ${t.prune} (recorded; nothing is uploaded)`, digest);
        else actions.push(inSync('publish', id, true));
        continue;
      }
      const owner = remote ? whose(remote, rec, t) : 'ours';
      if (typeof owner === 'object') {
        refuse(owner.notOurs);
        continue;
      }
      if (built) {
        upload(remote ? 'update' : 'create', `upload once ${imageId} is ${built.kind === 'create' ? 'made' : built.kind === 'replace' ? 'rebuilt' : 'grown'}`);
        continue;
      }
      if (imageRefused) continue;
      if (!remote) upload('create', `upload ${path} (sha256 ${digest!.slice(0, 12)}…)`, digest);
      else if (owner === 'our-half') upload('update', 'an interrupted upload of it is finished', digest);
      else upload('update', `${path} changed since it was published (sha256 ${remote.sha256!.slice(0, 12)}… -> ${digest!.slice(0, 12)}…)`, digest);
    }
  }
  for (const [key, rec] of i.orphans) {
    if (rec.type !== 'publish') continue;
    const id = orphanId(key);
    if (!i.prune) {
      notes.push(
        `${rec.to} (published from images.${rec.image}) left the YAML; ${rec.prune ? '`apply --prune` deletes it' : 'it is left where it is (prune: false); `apply --prune` forgets it'}`,
      );
      continue;
    }
    const remote = i.remotes.get(rec.to);
    // Deleted only if it still holds what reconcile uploaded; anything else is only forgotten.
    const deletes = rec.prune && !!rec.sha256 && remote?.sha256 === rec.sha256;
    const why = !rec.prune
      ? 'left where it is (prune: false): only forgotten'
      : !i.remotes.has(rec.to)
        ? `${i.errors.get(remoteErrorKey(rec.to)) ?? 'the object could not be read'}: only forgotten (apply looks again, and deletes it if it still holds reconcile's upload)`
        : !remote
          ? 'already gone: only forgotten'
          : deletes
            ? `published from images.${rec.image}, which no longer publishes it (prune: true)`
            : "holds another upload than reconcile's last: left where it is, only forgotten";
    actions.push({
      id,
      resource: 'publish',
      kind: 'delete',
      code: deletes ? 'left-yaml' : !remote && i.remotes.has(rec.to) ? 'gone' : 'not-ours',
      reason: why,
      destructive: deletes || (rec.prune && !i.remotes.has(rec.to)),
      changes: [],
      dependsOn: [],
      op: { type: 'publish.delete', target: rec.target, sha256: rec.prune ? rec.sha256 : undefined, inventoryKey: key },
    });
  }
  return { actions, refusals, notes };
}

export type { PublishRecord };
