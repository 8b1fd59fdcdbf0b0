// The user's small files an image's plan depends on — its passphraseFile and its cloud-init
// seed files — for image files and pool volumes alike: what to observe, and what the plan
// makes of what was observed.
import type { ImageSpec } from '../../reconcile/model.js';
import { unobservable } from '../observe.js';
import { planSeed, seedFiles, type SeedEntry } from './cloud-init.js';
import { exposedSecretFile, passphraseRefusal, type SmallFileDigest } from './small-files.js';

/** The files to observe for this image. */
export function fileInputsOf(spec: ImageSpec): string[] {
  return [...seedFiles(spec), ...(spec.encryption ? [spec.encryption.passphraseFile] : [])];
}

export type FileInputs = { ok: false; refusal: string } | { ok: true; warnings: string[]; seed?: { entries: SeedEntry[]; digest: string } };

/**
 * A refusal if a file the image needs cannot be used (an unreadable or empty passphraseFile, an
 * unreadable seed file); otherwise the warnings (a passphrase others can read) and the seed as
 * this plan will build it.
 */
export function planFileInputs(spec: ImageSpec, id: string, contents: Map<string, SmallFileDigest>, errors: Map<string, string>): FileInputs {
  const warnings: string[] = [];
  if (spec.encryption) {
    const refusal = passphraseRefusal(spec, contents, errors);
    if (refusal) return { ok: false, refusal };
    const warn = exposedSecretFile(`${id}: passphraseFile`, spec.encryption.passphraseFile, contents.get(spec.encryption.passphraseFile));
    if (warn) warnings.push(warn);
  }
  const seed = planSeed(spec, contents);
  if (seed && !seed.ok) return { ok: false, refusal: `${spec.origins.source ?? spec.origin}: cloud-init seed: ${unobservable(errors, seed.path)}` };
  return { ok: true, warnings, seed: seed?.ok ? { entries: seed.entries, digest: seed.digest } : undefined };
}
