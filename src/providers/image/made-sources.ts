// Sources a build makes before it converts: a download (fetched into the cache, decompressed
// beside the build) and a filesystem made from a directory. Each hands back a file for
// qemu-img to convert from, made in the build's private directory and removed before the
// build is published.
import { realpath, stat, truncate, writeFile } from 'node:fs/promises';
import path from 'node:path';
import { ensureDownloaded, type FetchContext } from '../../sources/cache.js';
import { directoryManifest } from '../../sources/directory-digest.js';
import { displayUrl } from '../../sources/http.js';
import { compressionOf, decompress } from '../../tools/decompress.js';
import { mkfsFromDirectory } from '../../tools/mkfs.js';
import { parseContainerRef, storageImageDigests, storageImageId, withImageRoot } from '../../tools/podman.js';
import { installedImageDigest, toDisk } from '../../tools/bcvk.js';
import { layoutImage } from '../../sources/oci-layout.js';
import { withTempDir } from '../../tools/scratch.js';
import * as qemuImg from '../../tools/qemu-img.js';
import { bootcIdentity, type ImageBuild } from './build.js';

export interface MadeSource {
  path: string;
  driver: string;
  /** the source's identity as built (a directory's digest when mkfs read it) */
  recorded?: string;
}

export interface SourceContext extends FetchContext {
  stateDir: string;
}

// Formats a downloaded image may be in (qemu-img's names): others are refused outright.
const DOWNLOAD_FORMATS = ['raw', 'qcow2', 'vmdk', 'vpc', 'vhdx', 'qcow', 'vdi'];

// A downloaded image must be whole in itself: a backing file, a data file or a vmdk extent
// naming another file would make qemu read files of this host into the image (a one-extent
// vmdk descriptor naming /etc/shadow is a valid image).
async function refuseReferences(url: string, input: string, info: qemuImg.QemuImgInfo): Promise<void> {
  if (!DOWNLOAD_FORMATS.includes(info.format))
    throw new Error(`${displayUrl(url)}: the download is a ${info.format} image, which is not taken from a download (only ${DOWNLOAD_FORMATS.join(', ')})`);
  const data = info['format-specific']?.data ?? {};
  const names = [info['backing-filename'], data['data-file'] as string | undefined].filter(Boolean) as string[];
  const self = await realpath(input);
  for (const e of (data.extents as { filename?: string }[] | undefined) ?? []) {
    const f = e.filename ?? '';
    if ((await realpath(f).catch(() => f)) !== self) names.push(f);
  }
  if (names.length) throw new Error(`${displayUrl(url)}: the downloaded ${info.format} image refers to other files (${names.join(', ')}); only self-contained images are used`);
}

export async function downloadedSource(src: Extract<ImageBuild['source'], { kind: 'download' }>, dir: string, ctx: SourceContext): Promise<MadeSource> {
  const cached = await ensureDownloaded(ctx.stateDir, { url: src.url, sha256: src.sha256, auth: src.auth, checksumFrom: src.checksumFrom }, ctx);
  let input = cached;
  const compression = await compressionOf(cached);
  if (compression) {
    input = path.join(dir, '.source');
    const size = (await stat(cached)).size;
    const task = ctx.progress.begin(ctx.id, `decompressing (${compression})`);
    try {
      await decompress(cached, input, compression, { signal: ctx.signal, onRead: (n) => task.update(n, size) });
    } finally {
      task.end();
    }
  }
  const info = await qemuImg.info(input);
  await refuseReferences(src.url, input, info);
  return { path: input, driver: info.format };
}

export async function filesystemSource(
  src: Extract<ImageBuild['source'], { kind: 'filesystem' | 'container' }>,
  size: number,
  dir: string,
  ctx: SourceContext,
): Promise<MadeSource> {
  const file = path.join(dir, '.source');
  await writeFile(file, '', { mode: 0o600 });
  await truncate(file, size);
  const what = src.kind === 'filesystem' ? src.dir : `container image ${src.ref}`;
  const task = ctx.progress.begin(ctx.id, `making ${src.filesystem} from ${what}`, 'percent');
  const mkfs = (root: string) => mkfsFromDirectory(src.filesystem, root, file, { signal: ctx.signal, protofile: path.join(dir, '.protofile') });
  try {
    if (src.kind === 'filesystem') {
      // What mkfs reads is recorded: the digest as the plan saw it may have moved since.
      const before = await directoryManifest(src.dir);
      await mkfs(src.dir).catch((e: Error) => {
        throw new Error(`${e.message} (the directory holds ${before.files} entries, ${before.bytes} bytes of files in a ${size}-byte filesystem: is size large enough?)`);
      });
      return { path: file, driver: 'raw', recorded: `directory:sha256:${before.digest}` };
    }
    // The image as it is now (a new build under the same name since the plan is what is made and recorded).
    const ref = parseContainerRef(src.ref);
    // A layout's image is pulled by the name its index gives it (a bare :TAG matched it above).
    const image = ref.kind === 'storage' ? { id: await storageImageId(ref.name) } : await layoutImage(ref);
    // Local storage: mounted by the ID read (and recorded), whatever the name points at by then.
    const named = ref.kind === 'storage' ? { kind: 'storage' as const, name: image.id } : 'name' in image && image.name ? { ...ref, tag: image.name } : ref;
    await withTempDir((scratch) => withImageRoot(named, path.join(scratch, 'store'), mkfs));
    const id = image.id;
    return { path: file, driver: 'raw', recorded: `container:sha256:${id}` };
  } finally {
    task.end();
  }
}

/**
 * A bootc image installed by bcvk to a qcow2 disk of the declared size. bcvk is given the name
 * (the installed system follows it for updates); the digest bcvk records on the disk must be
 * the image read just before, or the name moved during the install and the disk is discarded.
 */
export async function bootcSource(src: Extract<ImageBuild['source'], { kind: 'bootc' }>, size: number, dir: string, ctx: SourceContext): Promise<MadeSource> {
  const file = path.join(dir, '.source');
  const before = await storageImageDigests(src.ref);
  const task = ctx.progress.begin(ctx.id, `installing bootc image ${src.ref} (bcvk to-disk)`);
  try {
    await toDisk(src.ref, file, { size, filesystem: src.filesystem, rootSize: src.install.rootSize, kargs: src.install.kargs, signal: ctx.signal });
  } finally {
    task.end();
  }
  const installed = await installedImageDigest(file);
  if (installed && installed !== `sha256:${before.id}` && installed !== before.digest)
    throw new Error(`container image ${src.ref} changed during the install (bcvk installed ${installed}; ${before.id.slice(0, 12)}… was read before it); apply again`);
  return { path: file, driver: 'qcow2', recorded: bootcIdentity(before.id, src.install, src.filesystem) };
}
