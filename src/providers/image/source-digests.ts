// Image sources whose identity is a digest observation finds (a download named by a checksum
// list, a directory's content): what to observe, and the declared images with it filled in.
import type { DesiredState, ImageSpec } from '../../reconcile/model.js';
import { sourceKey, type ResolvedSources, type SourceTarget } from '../../sources/resolve.js';

export function sourceTarget(spec: ImageSpec): SourceTarget | undefined {
  const s = spec.source;
  if (s.kind === 'url' && !s.sha256 && s.checksumUrl) return { kind: 'checksum', listUrl: s.checksumUrl, url: s.url, auth: s.auth };
  if (s.kind === 'directory') return { kind: 'directory', dir: s.dir, filesystem: spec.filesystem ?? 'ext4' };
  if (s.kind === 'container') return { kind: 'container', ref: s.ref, bootc: !!s.bootc };
  return undefined;
}

/** The state with each such source's digest filled in; the images whose source could not be resolved, with why. */
export function withSourceDigests(state: DesiredState, sources: ResolvedSources | undefined): { state: DesiredState; errors: Map<string, string> } {
  const errors = new Map<string, string>();
  let images: DesiredState['images'] | undefined;
  for (const [name, spec] of Object.entries(state.images)) {
    const t = sourceTarget(spec);
    if (!t) continue;
    const key = sourceKey(t);
    const digest = sources?.digests.get(key);
    const err = sources?.errors.get(key) ?? (digest ? undefined : 'its source was not observed');
    if (err) errors.set(name, err);
    const spaced = sources?.spaced.get(key);
    if (t.kind === 'directory' && spec.filesystem === 'xfs' && spaced?.length)
      errors.set(
        name,
        `${t.dir} holds names with white space (${spaced.slice(0, 3).join(', ')}${spaced.length > 3 ? ', …' : ''}), or named "$", which mkfs.xfs cannot copy from a directory; use ext4 or btrfs`,
      );
    if (!digest) continue;
    images ??= { ...state.images };
    const s = spec.source;
    images[name] = { ...spec, source: s.kind === 'url' ? { ...s, sha256: digest } : s.kind === 'directory' || s.kind === 'container' ? { ...s, digest } : s };
  }
  return { state: images ? { ...state, images } : state, errors };
}
