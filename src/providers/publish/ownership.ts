// Whose object is at a publish target: the one rule plan and apply both decide by. An object
// is reconcile's to replace only when this state directory uploaded it: it holds the digest
// of reconcile's last upload (or of the upload under way), or it is the half of a page-blob
// upload this state directory began (a page blob exists from its first page; an S3 object only
// once complete, so an S3 object without the digest is never a half of ours).
import type { PublishRecord } from '../../reconcile/inventory.js';
import type { RemoteObject } from '../../publish/place.js';

export type Whose = 'ours' | 'our-half' | { notOurs: string };

export function whose(remote: RemoteObject, rec: PublishRecord | undefined, target: { to: string; pageBlob: boolean }): Whose {
  if (remote.sha256 && rec && (remote.sha256 === rec.sha256 || remote.sha256 === rec.upload?.sha256)) return 'ours';
  if (!remote.sha256 && rec?.upload && target.pageBlob) return 'our-half';
  if (remote.sha256)
    return {
      notOurs: `${target.to} holds an upload this state directory did not make (sha256 ${remote.sha256.slice(0, 12)}…: another host's, or another state directory's); it is left alone. Remove it, or publish to another key`,
    };
  return { notOurs: `an object reconcile did not publish is at ${target.to} (${remote.size} bytes, without its digest); it is left alone. Remove it, or publish to another key` };
}
