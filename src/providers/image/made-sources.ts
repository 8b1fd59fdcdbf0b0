// Sources a build makes before it converts: a download (fetched into the cache, decompressed
// beside the build) and a filesystem made from a directory. Each hands back a file for
// qemu-img to convert from, made in the build's private directory and removed before the
// build is published.
import { stat, truncate, writeFile } from 'node:fs/promises';
import path from 'node:path';
import type { ProgressSink } from '../../progress/progress.js';
import { ensureDownloaded } from '../../sources/cache.js';
import { directoryManifest } from '../../sources/directory-digest.js';
import { displayUrl } from '../../sources/http.js';
import { compressionOf, decompress } from '../../tools/decompress.js';
import { mkfsFromDirectory } from '../../tools/mkfs.js';
import { parseContainerRef, storageImageId, withImageRoot } from '../../tools/podman.js';
import { layoutImageId } from '../../sources/oci-layout.js';
import { withTempDir } from '../../tools/scratch.js';
import * as qemuImg from '../../tools/qemu-img.js';
import type { ImageBuild } from './build.js';

export interface MadeSource {
  path: string;
  driver: string;
  /** the source's identity as built (a directory's digest when mkfs read it) */
  recorded?: string;
}

export interface SourceContext {
  id: string;
  stateDir: string;
  progress: ProgressSink;
  signal?: AbortSignal;
  log: (line: string) => void;
}

// Formats whose image may name other files (backing files, extents, data files): a
// downloaded image must be whole in itself, or it could make qemu read files of this host.
function refuseReferences(url: string, info: qemuImg.QemuImgInfo): void {
  const data = info['format-specific']?.data ?? {};
  const names = [info['backing-filename'], data['data-file'] as string | undefined].filter(Boolean);
  const extents = (data.extents as { filename?: string }[] | undefined) ?? [];
  if (names.length || extents.length > 1)
    throw new Error(`${displayUrl(url)}: the downloaded ${info.format} image refers to other files (${names.join(', ') || 'extents'}); only self-contained images are used`);
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
  refuseReferences(src.url, info);
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
      await mkfs(src.dir);
      return { path: file, driver: 'raw', recorded: `directory:sha256:${before.digest}` };
    }
    // The image as it is now (a new build under the same name since the plan is what is made and recorded).
    const ref = parseContainerRef(src.ref);
    const id = ref.kind === 'storage' ? await storageImageId(ref.name) : await layoutImageId(ref);
    await withTempDir((scratch) => withImageRoot(ref, path.join(scratch, 'store'), mkfs));
    return { path: file, driver: 'raw', recorded: `container:sha256:${id}` };
  } finally {
    task.end();
  }
}
