// What a plan needs to know of the sources it cannot read from the YAML alone: the digest a
// checksum list gives for a download, and what a directory holds. Observed once per plan,
// in parallel; each failure is kept with its key, for the image it concerns.
import type { DownloadAuth } from '../reconcile/model.js';

export type SourceTarget =
  | { kind: 'checksum'; listUrl: string; url: string; auth?: DownloadAuth }
  | { kind: 'directory'; dir: string; filesystem: string }
  /** bootc: installed through bcvk, which must be there */
  | { kind: 'container'; ref: string; bootc: boolean };

export const sourceKey = (t: SourceTarget) =>
  t.kind === 'checksum' ? `checksum:${t.listUrl} ${t.url}` : t.kind === 'directory' ? `directory:${t.dir}` : `container:${t.ref}${t.bootc ? ' bootc' : ''}`;

export interface ResolvedSources {
  digests: Map<string, string>;
  errors: Map<string, string>;
  /** directories holding names a filesystem cannot take (xfs protofiles split on white space) */
  spaced: Map<string, string[]>;
}

export async function resolveSources(targets: SourceTarget[]): Promise<ResolvedSources> {
  const out: ResolvedSources = { digests: new Map(), errors: new Map(), spaced: new Map() };
  if (!targets.length) return out;
  const lists = new Map<string, Promise<string>>();
  // Whether bcvk can be run: asked once per plan, which may name many bootc images.
  let bcvk: Promise<boolean> | undefined;
  const bcvkPresent = () => (bcvk ??= import('../tools/bcvk.js').then(({ bcvkVersion }) => bcvkVersion().then((v) => v !== undefined)));
  await Promise.all(
    targets.map(async (t) => {
      const key = sourceKey(t);
      try {
        if (t.kind === 'checksum') {
          const [{ fetchText, displayUrl }, { readAuth }, { checksumFor }] = await Promise.all([import('./http.js'), import('./auth.js'), import('./checksums.js')]);
          // Credentials go to the list only on the download's own origin.
          const auth = new URL(t.listUrl).origin === new URL(t.url).origin ? await readAuth(t.auth) : undefined;
          // Read once per list and credentials: another image's token is not this one's.
          const listKey = `${t.listUrl}\0${auth ? JSON.stringify(t.auth) : ''}`;
          if (!lists.has(listKey)) lists.set(listKey, fetchText(t.listUrl, auth));
          const text = await lists.get(listKey)!;
          const r = checksumFor(text, t.url);
          if ('error' in r) throw new Error(`checksumUrl ${displayUrl(t.listUrl)} ${r.error}`);
          out.digests.set(key, r.sha256);
        } else if (t.kind === 'container') {
          const [{ parseContainerRef, storageImageId }, { layoutImageId }] = await Promise.all([import('../tools/podman.js'), import('./oci-layout.js')]);
          const ref = parseContainerRef(t.ref);
          if (t.bootc && !(await bcvkPresent()))
            throw new Error(
              `source.container ${t.ref}: bcvk is not installed (bootc: true installs the image through \`bcvk to-disk\`); install bcvk, or remove bootc to make a filesystem of the image's root instead`,
            );
          out.digests.set(key, ref.kind === 'storage' ? await storageImageId(ref.name).catch((e) => Promise.reject(containerError(t.ref, e))) : await layoutImageId(ref));
        } else {
          const { directoryManifest } = await import('./directory-digest.js');
          const m = await directoryManifest(t.dir);
          out.digests.set(key, m.digest);
          if (m.spaced.length) out.spaced.set(key, m.spaced);
        }
      } catch (e) {
        const err = e as NodeJS.ErrnoException;
        const what = t.kind === 'directory' ? t.dir : t.kind === 'container' ? t.ref.replace(/^oci(-archive)?:/, '') : (await import('./http.js')).displayUrl(t.listUrl);
        out.errors.set(key, err.code ? `cannot read ${what}: ${err.code}` : err.message);
      }
    }),
  );
  return out;
}

/** Why an image in local container storage cannot be used: podman missing, or no such image. */
function containerError(ref: string, e: unknown): Error {
  const err = e as NodeJS.ErrnoException & { stderr?: string };
  if (err.code === 'ENOENT') return new Error(`source.container ${ref}: podman is not installed (images in local container storage are read through it)`);
  const said = (err.stderr ?? err.message).trim().split('\n').pop();
  return new Error(`source.container ${ref}: not in local container storage (${said})`);
}
