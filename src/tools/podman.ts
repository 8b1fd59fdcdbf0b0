// Container images as filesystems: podman for images in local container storage (read-only:
// `image mount`, never a container made), and for OCI layouts and archives a private store of
// its own in scratch space (pulled there with the vfs driver, mounted, then removed), so that
// nothing is added to the host's container storage.
import { randomBytes } from 'node:crypto';
import { mkdir, readdir, readFile, rm, symlink, writeFile } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import path from 'node:path';
import { failpoint } from '../failpoint.js';
import { processAlive, run } from './exec.js';

/** A reference as the YAML gives it: oci-archive:PATH[:TAG], oci:DIR[:TAG], or a name in local storage. */
export type ContainerRef = { kind: 'storage'; name: string } | { kind: 'oci-archive' | 'oci'; path: string; tag?: string };

export function parseContainerRef(ref: string): ContainerRef {
  const m = /^(oci-archive|oci):(\/[^:]*)(?::(.+))?$/.exec(ref);
  if (m) return { kind: m[1] as 'oci-archive' | 'oci', path: m[2]!, tag: m[3] };
  return { kind: 'storage', name: ref };
}

/** The image ID (its config's digest, sha256 hex) of an image in local container storage. */
export async function storageImageId(name: string): Promise<string> {
  const { stdout } = await run('podman', ['image', 'inspect', '--format', '{{.Id}}', '--', name], { retries: 0 });
  return stdout.trim().replace(/^sha256:/, '');
}

/** The image's ID and its manifest digest (sha256:HEX; empty for an image built here), for a check of what was installed. */
export async function storageImageDigests(name: string): Promise<{ id: string; digest: string }> {
  const { stdout } = await run('podman', ['image', 'inspect', '--format', '{{.Id}} {{.Digest}}', '--', name], { retries: 0 });
  const [id = '', digest = ''] = stdout.trim().split(' ');
  return { id: id.replace(/^sha256:/, ''), digest };
}

/** Runs fn with the image's root filesystem mounted read-only somewhere; unmounted after. */
export async function withImageRoot<T>(ref: ContainerRef, scratch: string, fn: (root: string) => Promise<T>): Promise<T> {
  // A private store for layouts: the host's storage is neither read nor written.
  // podman takes a run root of at most 50 characters: a short private directory of its own.
  // Lower case: podman names an image pulled from a layout after its path, and names are lower case.
  const runroot = ref.kind === 'storage' ? undefined : path.join(tmpdir().length < 30 ? tmpdir() : '/tmp', `vr-run-${randomBytes(4).toString('hex')}`);
  if (runroot) {
    await mkdir(runroot, { mode: 0o700 });
    await symlink(ref.kind === 'storage' ? '' : ref.path, path.join(runroot, 'src'));
  }
  const store = runroot ? ['--root', path.join(scratch, 'root'), '--runroot', runroot, '--storage-driver', 'vfs'] : [];
  // What a kill -9 would leave (a mount in the host's storage, the run root), written before it
  // exists: the next apply releases it (releaseAbandonedMounts).
  const marker = path.join(path.dirname(scratch), MARKER);
  await writeFile(marker, JSON.stringify({ image: ref.kind === 'storage' ? ref.name : undefined, runroot }));
  const transport = ref.kind === 'storage' ? ref.name : `${ref.kind}:${path.join(runroot!, 'src')}${ref.tag ? `:${ref.tag}` : ''}`;
  let image = transport;
  try {
    if (ref.kind !== 'storage') {
      const { stdout } = await run('podman', [...store, 'pull', '-q', '--', transport], { retries: 0 });
      image = stdout.trim().split('\n').pop()!;
    }
    const { stdout } = await run('podman', [...store, 'image', 'mount', '--', image], { retries: 0 });
    failpoint('container-mounted');
    try {
      return await fn(stdout.trim());
    } finally {
      await run('podman', [...store, 'image', 'unmount', '--', image], { retries: 0 }).catch(() => undefined);
    }
  } finally {
    // The private store holds only what was pulled into it (vfs: plain directories, no mounts).
    if (runroot) {
      await rm(scratch, { recursive: true, force: true });
      await rm(runroot, { recursive: true, force: true });
    }
    await rm(marker, { force: true });
  }
}

const MARKER = 'podman-mount.json';

/**
 * What builds killed in the middle left (their scratch directories under `scratchRoot`, named
 * PID-…, whose process is gone): an image of the host's storage still mounted, a run root.
 * Released before those directories are removed; returns a log line for each.
 */
export async function releaseAbandonedMounts(scratchRoot: string): Promise<string[]> {
  const out: string[] = [];
  for (const n of await readdir(scratchRoot).catch(() => [] as string[])) {
    const m = /^(\d+)-/.exec(n);
    if (!m || processAlive(Number(m[1]))) continue;
    const marker = path.join(scratchRoot, n, MARKER);
    const left = await readFile(marker, 'utf8')
      .then((t) => JSON.parse(t) as { image?: string; runroot?: string })
      .catch(() => undefined);
    if (!left) continue;
    if (left.image) {
      await run('podman', ['image', 'unmount', '--', left.image], { retries: 0 }).catch(() => undefined);
      out.push(`unmounted container image ${left.image}, left mounted by an interrupted apply`);
    }
    if (left.runroot?.includes('/vr-run-')) await rm(left.runroot, { recursive: true, force: true });
    await rm(marker, { force: true });
  }
  return out;
}
