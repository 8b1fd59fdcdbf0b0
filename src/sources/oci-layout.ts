// The image ID (config digest) of an image in an OCI layout, a directory or a tar archive:
// index.json → the manifest (the one tagged TAG, or the only one) → its config. Read from the
// files alone, at plan time; the archive's members through tar.
import { readFile } from 'node:fs/promises';
import path from 'node:path';
import { readMember } from '../tools/tar.js';
import type { ContainerRef } from '../tools/podman.js';

const blobPath = (digest: string) => `blobs/${digest.replace(':', '/')}`;

export async function layoutImageId(ref: Extract<ContainerRef, { kind: 'oci' | 'oci-archive' }>): Promise<string> {
  return (await layoutImage(ref)).id;
}

/** The image's ID, and the name the layout gives it (what podman must be asked for). */
export async function layoutImage(ref: Extract<ContainerRef, { kind: 'oci' | 'oci-archive' }>): Promise<{ id: string; name?: string }> {
  const what = `${ref.kind}:${ref.path}${ref.tag ? `:${ref.tag}` : ''}`;
  const read = async (member: string): Promise<string> =>
    (ref.kind === 'oci' ? readFile(path.join(ref.path, member), 'utf8') : readMember(ref.path, member)).catch((e: NodeJS.ErrnoException & { stderr?: string }) => {
      const why = e.code ?? (e.stderr ?? e.message).trim().split('\n')[0];
      throw new Error(`source.container ${what}: not an OCI ${ref.kind === 'oci' ? 'layout' : 'archive'}: cannot read its ${member} (${why})`);
    });
  let index: { manifests?: { digest: string; annotations?: Record<string, string> }[] };
  try {
    index = JSON.parse(await read('index.json'));
  } catch (e) {
    if (e instanceof SyntaxError) throw new Error(`source.container ${what}: its index.json is not JSON`);
    throw e;
  }
  const all = index.manifests ?? [];
  const tagged = ref.tag
    ? all.filter(
        (m) =>
          [ref.tag, `localhost/${ref.tag}`].includes(m.annotations?.['org.opencontainers.image.ref.name']) ||
          m.annotations?.['org.opencontainers.image.ref.name']?.endsWith(`:${ref.tag}`),
      )
    : all;
  if (tagged.length !== 1)
    throw new Error(
      `${ref.kind}:${ref.path}${ref.tag ? `:${ref.tag}` : ''}: ${tagged.length ? `holds ${tagged.length} images; name one with :TAG` : ref.tag ? `holds no image tagged ${ref.tag}` : 'holds no image'}`,
    );
  const manifest = JSON.parse(await read(blobPath(tagged[0]!.digest))) as { config?: { digest?: string } };
  const digest = manifest.config?.digest;
  if (!digest?.startsWith('sha256:')) throw new Error(`${ref.path}: its manifest names no sha256 config`);
  return { id: digest.slice('sha256:'.length), name: tagged[0]!.annotations?.['org.opencontainers.image.ref.name'] };
}
