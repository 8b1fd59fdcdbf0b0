// What a plan needs to know about publish targets: what each holds (one HEAD each, all at
// once), and the SHA-256 of each published image (read once per version of the file: kept in
// the stat-keyed cache, whose entry goes stale with any write to it).
import { cacheable, fileSignature, type StatCache } from '../providers/common/stat-cache.js';
import type { PublishTarget } from '../reconcile/model.js';
import { sha256File } from '../file-sha256.js';
import { errorText, openPlace, remoteErrorKey, type RemoteObject } from './place.js';

export async function observeRemotes(targets: PublishTarget[], errors: Map<string, string>): Promise<Map<string, RemoteObject | null>> {
  const out = new Map<string, RemoteObject | null>();
  await Promise.all(
    targets.map(async (t) => {
      try {
        out.set(t.to, await (await openPlace(t)).head());
      } catch (e) {
        errors.set(remoteErrorKey(t.to), `cannot read ${t.to}: ${errorText(e).split('\n')[0]!.replace(`${t.to}: `, '')}`);
      }
    }),
  );
  return out;
}

export async function fileDigests(paths: string[], cache: StatCache | undefined, errors: Map<string, string>): Promise<Map<string, string>> {
  const out = new Map<string, string>();
  for (const p of paths) {
    try {
      const sig = await fileSignature(p);
      if (!cacheable(sig)) continue;
      const key = `sha256:${p}`;
      const known = cache?.get<string>(key, sig);
      const digest = known ?? (await sha256File(p));
      // Written while it was read: not kept (the next plan reads it again).
      if (!known && (await fileSignature(p)) === sig) cache?.set(key, sig, digest);
      out.set(p, digest);
    } catch (e) {
      errors.set(`sha256:${p}`, (e as Error).message);
    }
  }
  return out;
}
