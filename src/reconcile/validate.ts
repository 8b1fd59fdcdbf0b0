// Semantic checks that JSON Schema cannot express (references, exclusivity, cross-file
// duplicates, format rules), and normalisation of all files into one DesiredState.
import path from 'node:path';
import { Cron } from 'croner';
import { declaredDisks, modeConflicts, modeProblems } from '../providers/backup/modes.js';
import type { ConfigError } from './errors.js';
import {
  type PublishTarget,
  article,
  FILESYSTEM_MIN_SIZE,
  type Filesystem,
  FILE_POOLS,
  FILE_WIPE_ALGORITHMS,
  imageSecretUsage,
  LUN_POOLS,
  STORAGE_POOLS,
  sourceImage,
  VOLUME_EXT,
} from './model.js';
import type {
  BackupSpec,
  BootcInstall,
  MaintenanceWindow,
  DesiredState,
  OffsiteTarget,
  DiskSpec,
  Format,
  ImageSource,
  ImageSpec,
  Permissions,
  PoolSpec,
  PoolType,
  Qcow2Options,
  SecretSpec,
  VmSpec,
} from './model.js';
import { formatDuration, parseDuration, TIMER_MAX_SECONDS } from './durations.js';
import { formatSize, parseSize } from './sizes.js';
import { normalizePath, systemPlace, systemPoolPlace, type Resolver } from './paths.js';
import { locate, type FieldPath, type SourceFile } from './source-file.js';
import type {
  BackupInput,
  DiskInput,
  DiskPolicyInput,
  FileInput,
  ImageDefaultsInput,
  ImageInput,
  PermissionsInput,
  PoolInput,
  PoolSourceInput,
  SecretInput,
  VmInput,
} from './input.js';

export interface ParsedFile {
  source: SourceFile;
  /** schema-checked: its shape is FileInput (see input.ts) */
  data: FileInput | undefined;
}

const KINDS = ['pools', 'images', 'vms', 'backups', 'secrets'] as const;
const GiB = 1024 ** 3;

// Limits of the formats themselves (qemu block drivers).
const MAX_SIZE: Partial<Record<Format, number>> = { vhd: 2040 * GiB, vhdx: 64 * 1024 * GiB };

const POOL_SOURCE_FIELDS: Record<PoolType, { required: string[][]; allowed: string[]; formats?: string[]; needsPath: boolean }> = {
  dir: { required: [], allowed: [], needsPath: true },
  fs: {
    required: [['device']],
    allowed: ['device', 'format'],
    formats: ['auto', 'ext2', 'ext3', 'ext4', 'xfs', 'btrfs', 'vfat', 'ufs', 'iso9660', 'udf', 'gfs', 'gfs2', 'hfs+', 'ocfs2', 'vmfs'],
    needsPath: true,
  },
  netfs: { required: [['host'], ['dir']], allowed: ['host', 'dir', 'format'], formats: ['auto', 'nfs', 'glusterfs', 'cifs'], needsPath: true },
  logical: { required: [['name', 'device']], allowed: ['name', 'device', 'format'], formats: ['lvm2'], needsPath: false },
  disk: { required: [['device']], allowed: ['device', 'format'], formats: ['dos', 'dvh', 'gpt', 'mac', 'bsd', 'pc98', 'sun', 'lvm2'], needsPath: false },
  iscsi: { required: [['host'], ['device']], allowed: ['host', 'device', 'auth', 'initiator'], needsPath: false },
  'iscsi-direct': { required: [['host'], ['device'], ['initiator']], allowed: ['host', 'device', 'auth', 'initiator'], needsPath: false },
  rbd: { required: [['host'], ['name']], allowed: ['host', 'name', 'auth'], needsPath: false },
};

const BUS_PREFIX: Record<DiskSpec['bus'], RegExp> = {
  virtio: /^vd/,
  sata: /^sd/,
  scsi: /^sd/,
  ide: /^hd/,
  nvme: /^nvme/,
};

class Checker {
  readonly errors: ConfigError[] = [];
  constructor(readonly file: SourceFile) {}

  at(path: FieldPath, key = false): string {
    const p = locate(this.file, path, { key });
    return `${this.file.path}:${p.line}:${p.col}`;
  }

  err(path: FieldPath, message: string, key = false): void {
    const p = locate(this.file, path, { key });
    this.errors.push({ file: this.file.path, line: p.line, col: p.col, field: fieldOf(path), message });
  }

  duration(path: FieldPath, value: string, max = Infinity): number | undefined {
    const v = parseDuration(value);
    if (typeof v !== 'number') {
      this.err(path, v.error);
      return undefined;
    }
    if (v > max) {
      this.err(path, `must be at most ${formatDuration(max)} (got ${JSON.stringify(value)})`);
      return undefined;
    }
    return v;
  }

  size(path: FieldPath, value: unknown, min = 1): number | undefined {
    const v = parseSize(value);
    if (typeof v !== 'number') {
      this.err(path, v.error);
      return undefined;
    }
    if (v < min) {
      this.err(path, `must be at least ${formatSize(min)} (got ${JSON.stringify(value)})`);
      return undefined;
    }
    return v;
  }
}

function fieldOf(path: FieldPath): string {
  return path.map((s, i) => (typeof s === 'number' ? `[${s}]` : i ? `.${s}` : s)).join('');
}

function permissions(raw: PermissionsInput | undefined): Permissions | undefined {
  if (!raw) return undefined;
  return { owner: raw.owner, group: raw.group, mode: raw.mode === undefined ? undefined : parseInt(raw.mode, 8) };
}

/** What libvirt's volume XML can express, by pool type: anything else would be silently lost. */
function checkPoolImage(c: Checker, base: FieldPath, raw: ImageInput, pool: PoolInput, format: Format): void {
  const p = (...rest: FieldPath) => [...base, ...rest];
  const fileBased = FILE_POOLS.includes(pool.type);
  if (!fileBased && format !== 'raw') {
    c.err(raw.format !== undefined ? p('format') : base, `${article(pool.type)} pool holds raw block volumes; format must be raw (got ${format})`, raw.format === undefined);
  }
  if (fileBased && format === 'vhdx') {
    c.err(raw.format !== undefined ? p('format') : base, "libvirt's volume formats do not include vhdx; declare a vhdx image with path:", raw.format === undefined);
  }
  if (LUN_POOLS.includes(pool.type) && raw.source !== undefined) {
    c.err(p('source'), `volumes of ${article(pool.type)} pool are LUNs that exist on the target; they are adopted, not built from a source`);
  }
  const q = raw.qcow2 ?? {};
  for (const f of ['compression', 'compressed', 'refcountBits', 'extendedL2'] as const) {
    if (q[f] !== undefined) c.err(p('qcow2', f), 'libvirt volume XML cannot set this; in a pool, qcow2 takes clusterSize, lazyRefcounts, compat and preallocation', true);
  }
  if (q.preallocation === 'full') c.err(p('qcow2', 'preallocation'), 'libvirt allocates pool volumes with fallocate; use preallocation: falloc (or metadata)');
  for (const f of ['vmdk', 'vhd', 'vhdx'] as const) {
    if (raw[f] !== undefined) c.err(p(f), `libvirt volume XML has no ${f} options; declare the image with path: to set them`, true);
  }
  // libvirt makes encrypted volumes with qemu-img (LUKS in qcow2, or raw LUKS) in file pools only.
  if (raw.encryption?.iterTime !== undefined && fileBased)
    c.err(p('encryption', 'iterTime'), "libvirt makes an encrypted pool volume with qemu-img's own key derivation time; iterTime is for image files", true);
  if (raw.encryption !== undefined && !fileBased)
    c.err(p('encryption'), `an encrypted volume needs a dir, fs or netfs pool (libvirt makes it with qemu-img there); ${pool.type} pools hold plain block volumes`, true);
  else if (raw.encryption !== undefined && raw.source !== undefined)
    c.err(p('source'), 'an encrypted pool volume is created blank in this version; import into an image with path:, or leave out source', true);
  // libvirt names the qemu-img secret object after the volume, and QEMU ids are restricted.
  const volName = raw.volume ?? `${base[1]}.${VOLUME_EXT[format]}`;
  if (raw.encryption !== undefined && fileBased && !/^[A-Za-z][A-Za-z0-9._-]*$/.test(String(volName)))
    c.err(
      p(raw.volume !== undefined ? 'volume' : 'encryption'),
      `an encrypted volume's name must start with a letter and hold only letters, digits, '.', '_' or '-' (libvirt makes a QEMU object id of it); got ${JSON.stringify(volName)}`,
      raw.volume === undefined,
    );
  if (raw.source?.backing !== undefined && !fileBased) c.err(p('source', 'backing'), `${article(pool.type)} pool holds raw block volumes; overlays need a dir, fs or netfs pool`);
}

// 255 bytes of a file name, less what a build directory adds: ".", ".reconcile-", a pid of
// up to 7 digits, "-" and 8 hex digits.
const MAX_IMAGE_NAME_BYTES = 255 - 1 - '.reconcile-'.length - 7 - 1 - 8;

function checkImage(c: Checker, name: string, raw: ImageInput, defaults: ImageDefaultsInput | undefined, pools: Record<string, PoolInput>): ImageSpec | undefined {
  const base: FieldPath = ['images', name];
  const p = (...rest: FieldPath) => [...base, ...rest];
  const okBefore = c.errors.length;

  let location: ImageSpec['location'] | undefined;
  if (raw.pool !== undefined && raw.path !== undefined) c.err(p('path'), 'set exactly one of pool / path, not both', true);
  else if (raw.pool !== undefined) {
    const pool = pools[raw.pool];
    if (!pool) c.err(p('pool'), `refers to pool ${JSON.stringify(raw.pool)}, which is not declared under pools (declared: ${Object.keys(pools).join(', ') || 'none'})`);
    const fileBased = !pool || FILE_POOLS.includes(pool.type);
    const fmt: Format = raw.format ?? defaults?.format ?? 'qcow2';
    location = { kind: 'pool', pool: raw.pool, volume: raw.volume ?? (fileBased ? `${name}.${VOLUME_EXT[fmt]}` : name) };
    if (pool) checkPoolImage(c, base, raw, pool, fmt);
    if (pool?.type === 'disk' && raw.volume === undefined) {
      c.err(base, `a disk pool's volumes are partitions named after its device (e.g. sdb1, loop0p1); set volume:`, true);
    }
  } else if (raw.path !== undefined) {
    location = { kind: 'path', path: normalizePath(raw.path) };
    const bad = systemPlace(location.path);
    if (bad) c.err(p('path'), `${raw.path} is refused: ${bad}; put images under a data directory such as /var/lib/libvirt/images or /srv`);
    // Built beside its final path in ".NAME.reconcile-PID-XXXXXXXX", which must fit in a file name (255 bytes).
    const nameBytes = Buffer.byteLength(path.basename(location.path));
    if (nameBytes > MAX_IMAGE_NAME_BYTES)
      c.err(p('path'), `file name is ${nameBytes} bytes long; at most ${MAX_IMAGE_NAME_BYTES} are allowed (the image is built beside it under a longer name)`);
  } else c.err(base, 'missing location: set exactly one of pool (a declared pool) or path (an absolute file path)', true);
  if (raw.volume !== undefined && raw.pool === undefined) c.err(p('volume'), 'names a volume in a pool; it needs pool', true);

  const format: Format = raw.format ?? defaults?.format ?? 'qcow2';
  // url comes with its checksum (and maybe credentials): those are not kinds of source.
  const companions = ['sha256', 'checksumUrl', 'auth'];
  const srcKeys = raw.source ? Object.keys(raw.source).filter((k) => !companions.includes(k) && k !== 'bootc') : [];
  let source: ImageSource = { kind: 'blank' };
  if (raw.source !== undefined && srcKeys.length !== 1) {
    c.err(
      p('source'),
      `set exactly one of file, image, backing, container, directory, cloudInit, url (got ${srcKeys.length ? srcKeys.join(', ') : raw.source.bootc !== undefined ? 'only bootc, which goes with container' : 'none'})`,
    );
  } else if (srcKeys[0] === 'url') {
    const s = raw.source!;
    source = urlSource(c, p, s);
  } else if (srcKeys.length === 1) {
    for (const k of companions) if (raw.source![k as keyof typeof raw.source] !== undefined) c.err(p('source', k), 'goes with source.url only');
    if (raw.source!.bootc !== undefined && srcKeys[0] !== 'container') c.err(p('source', 'bootc'), 'goes with source.container only');
    const k = srcKeys[0] as keyof NonNullable<ImageInput['source']>;
    const s = raw.source!;
    if (k === 'file') source = { kind: 'file', file: s.file! };
    else if (k === 'image') source = { kind: 'image', image: s.image! };
    else if (k === 'backing') source = s.backing!.startsWith('/') ? { kind: 'backing', path: s.backing! } : { kind: 'backing', image: s.backing! };
    else if (k === 'container') source = { kind: 'container', ref: s.container!, bootc: bootcInstall(c, p, s.bootc) };
    else if (k === 'cloudInit') source = { kind: 'cloudInit', files: s.cloudInit! };
    else if (k === 'directory') source = { kind: 'directory', dir: s.directory! };
  }
  // What this version cannot build is refused here, not first at plan time: validate accepts
  // exactly what plan can do.
  if (source.kind === 'container' && /^[a-z][a-z0-9+.-]*:\/\//i.test(source.ref))
    c.err(
      p('source', 'container'),
      `${source.ref.split('://')[0]}:// is a registry: reconcile does not pull; \`podman pull\` it first and name it as in local storage (NAME[:TAG])`,
    );
  else if (source.kind === 'container' && !/^(oci-archive:\/|oci:\/|[A-Za-z0-9][A-Za-z0-9._/:@-]*$)/.test(source.ref))
    c.err(
      p('source', 'container'),
      `must be an image in local container storage (NAME[:TAG], an image ID), oci-archive:/PATH[:TAG] or oci:/DIR[:TAG] (got ${JSON.stringify(source.ref)})`,
    );
  if (source.kind === 'container' && source.bootc && /^oci(-archive)?:/.test(source.ref))
    c.err(
      p('source', 'bootc'),
      `bcvk installs an image from local container storage; \`podman load\` (an archive) or \`podman pull oci:DIR\` it first and name it (got ${JSON.stringify(source.ref)})`,
    );
  if (source.kind === 'directory' && location?.kind === 'path' && `${location.path}/`.startsWith(`${normalizePath(source.dir).replace(/\/$/, '')}/`))
    c.err(p('source', 'directory'), `${location.path} is inside ${source.dir}: the image would be made from a directory that holds it`);
  if (source.kind === 'directory' || source.kind === 'container') {
    const what = source.kind === 'directory' ? 'a directory' : 'a container image';
    if (raw.pool !== undefined)
      c.err(p('source', source.kind), `a filesystem image from ${what} goes into an image with path: in this version; declare the pool volume with source.image naming it`, true);
    if (raw.size === undefined)
      c.err(
        base,
        `missing required field "size": ${source.kind === 'container' && source.bootc ? 'the disk bcvk installs the bootc image to' : `the filesystem made from source.${source.kind}`} needs a size`,
        true,
      );
    if (raw.adopt) c.err(p('adopt'), `an image made from ${what} is built by reconcile; there is nothing to adopt`, true);
  }
  const publish = publishTargets(c, p, raw, format);
  // A seed is an ISO 9660 image: its size is what its files make, and it is read-only media.
  if (source.kind === 'cloudInit') {
    if (format !== 'raw') c.err(raw.format !== undefined ? p('format') : base, `a cloud-init seed is an ISO image; format must be raw (got ${format})`, raw.format === undefined);
    if (raw.size !== undefined) c.err(p('size'), "a cloud-init seed's size is what its files make; remove size", true);
    if (raw.encryption !== undefined) c.err(p('encryption'), 'cloud-init reads the seed at first boot, before anything could unlock it; it cannot be encrypted', true);
    if (raw.adopt) c.err(p('adopt'), 'a cloud-init seed is built by reconcile from its files; there is nothing to adopt', true);
  }
  if (raw.rebuild !== undefined && source.kind !== 'url' && source.kind !== 'directory' && source.kind !== 'container')
    c.err(p('rebuild'), 'applies to images made from source.url, source.directory or source.container only', true);
  if (source.kind === 'url' && raw.pool !== undefined)
    c.err(p('source', 'url'), 'a download goes into an image with path: in this version; declare the pool volume with source.image naming it', true);
  if (source.kind === 'url' && raw.adopt) c.err(p('adopt'), 'an image made from a download is built by reconcile; there is nothing to adopt', true);
  if (source.kind === 'backing' && format !== 'qcow2') {
    c.err(p('source', 'backing'), `a copy-on-write overlay must be format qcow2 (format is ${format})`);
  }
  if (source.kind === 'backing' && 'image' in source && !/^[a-z0-9]([a-z0-9._-]{0,62})$/.test(source.image)) {
    c.err(p('source', 'backing'), `must be the name of a declared image or an absolute path (got ${JSON.stringify(source.image)})`);
  }
  if (raw.filesystem !== undefined && source.kind !== 'container' && source.kind !== 'directory') {
    c.err(p('filesystem'), 'only applies to images built from source.container or source.directory', true);
  }

  let size: number | undefined;
  if (raw.size !== undefined) size = c.size(p('size'), raw.size);
  else if (raw.source === undefined && !raw.adopt && !(raw.pool !== undefined && LUN_POOLS.includes(pools[raw.pool]?.type as PoolType))) {
    c.err(base, 'missing required field "size": a blank image needs a virtual size', true);
  }
  const fsMin =
    (source.kind === 'directory' || (source.kind === 'container' && !source.bootc)) && size !== undefined
      ? FILESYSTEM_MIN_SIZE[(raw.filesystem as Filesystem | undefined) ?? 'ext4']
      : undefined;
  // The root filesystem is one partition of the disk, beside the boot partitions.
  if (source.kind === 'container' && source.bootc?.rootSize !== undefined && size !== undefined && source.bootc.rootSize >= size)
    c.err(
      p('source', 'bootc', 'rootSize'),
      `must be less than the disk's size ${formatSize(size)}, which also holds the boot partitions (got ${formatSize(source.bootc.rootSize)})`,
    );
  if (fsMin !== undefined && size! < fsMin) c.err(p('size'), `${raw.filesystem ?? 'ext4'} needs at least ${formatSize(fsMin)} (got ${formatSize(size!)})`);
  const max = MAX_SIZE[format];
  if (size !== undefined && max !== undefined && size > max) c.err(p('size'), `${formatSize(size)} exceeds the ${format} limit of ${formatSize(max)}`);

  for (const f of ['qcow2', 'vmdk', 'vhd', 'vhdx'] as const) {
    if (raw[f] !== undefined && format !== f) c.err(p(f), `options for ${f} given, but format is ${format}`, true);
  }
  let qcow2: Qcow2Options | undefined;
  if (format === 'qcow2') {
    const q = { ...(defaults?.qcow2 ?? {}), ...(raw.qcow2 ?? {}) };
    const opts: Qcow2Options = { ...q, clusterSize: undefined };
    qcow2 = opts;
    if (q.clusterSize !== undefined) {
      const cs = c.size(p('qcow2', 'clusterSize'), q.clusterSize, 512);
      if (cs !== undefined && (cs > 2 * 1024 * 1024 || (cs & (cs - 1)) !== 0)) {
        c.err(p('qcow2', 'clusterSize'), `must be a power of two from 512 to 2M (got ${JSON.stringify(q.clusterSize)})`);
      }
      opts.clusterSize = cs;
    }
    const compat = q.compat ?? '1.1';
    if (q.compressed && source.kind !== 'file' && source.kind !== 'image') {
      c.err(p('qcow2', 'compressed'), 'compressed writes imported data compressed; it needs source.file or source.image');
    }
    if (q.compressed && q.preallocation && q.preallocation !== 'off') {
      c.err(p('qcow2', 'preallocation'), 'cannot preallocate an image whose data is written compressed (set compressed: false or preallocation: off)');
    }
    if (compat === '0.10') {
      for (const f of ['lazyRefcounts', 'extendedL2'] as const) if (q[f]) c.err(p('qcow2', f), 'needs compat 1.1');
      if (q.compression === 'zstd') c.err(p('qcow2', 'compression'), 'zstd needs compat 1.1');
    }
    if (q.extendedL2 && (opts.clusterSize ?? 65536) < 16384) c.err(p('qcow2', 'extendedL2'), 'needs clusterSize of at least 16K');
    if (q.preallocation && q.preallocation !== 'off' && source.kind === 'backing') {
      c.err(p('qcow2', 'preallocation'), 'an overlay on a backing image cannot be preallocated');
    }
  }
  if (raw.encryption !== undefined) {
    if (format !== 'qcow2' && format !== 'raw') c.err(p('encryption'), `LUKS encryption is supported for qcow2 and raw images (format is ${format})`, true);
    if (raw.qcow2?.compressed) c.err(p('qcow2', 'compressed'), 'compressed clusters cannot be encrypted');
  }
  // Wiping happens only where reconcile deletes: never to what it adopted, nor to LUNs.
  if (raw.wipe !== undefined) {
    if (raw.adopt) c.err(p('wipe'), 'an adopted image is never deleted by reconcile, so it is never wiped; wipe is for images reconcile creates');
    else if (location?.kind === 'path' && !FILE_WIPE_ALGORITHMS.includes(raw.wipe))
      c.err(p('wipe'), `an image file is wiped with zero or random (got ${raw.wipe}); the other algorithms are libvirt's, for pool volumes`);
    else if (raw.pool !== undefined && LUN_POOLS.includes(pools[raw.pool]?.type as PoolType))
      c.err(p('wipe'), `volumes of ${article(pools[raw.pool]!.type)} pool are LUNs of the target, never deleted by reconcile`);
  }
  if (raw.vmdk?.subformat === 'streamOptimized' && source.kind === 'blank') {
    // A blank streamOptimized image is valid, but qemu cannot write it afterwards: worth saying at plan time.
  }
  if (c.errors.length > okBefore || !location) return undefined;
  return {
    name,
    location,
    format,
    size,
    source,
    // A bootc image names its own root filesystem (its install configuration) unless one is declared.
    filesystem: (raw.filesystem as ImageSpec['filesystem']) ?? (source.kind === 'directory' || (source.kind === 'container' && !source.bootc) ? 'ext4' : undefined),
    qcow2,
    vmdk: format === 'vmdk' ? (raw.vmdk ?? {}) : undefined,
    vhd: format === 'vhd' ? (raw.vhd ?? {}) : undefined,
    vhdx: format === 'vhdx' ? (raw.vhdx ?? {}) : undefined,
    encryption: raw.encryption,
    permissions: permissions(raw.permissions ?? defaults?.permissions),
    protect: raw.protect ?? defaults?.protect ?? false,
    wipe: raw.wipe,
    adopt: raw.adopt ?? false,
    followSymlink: raw.followSymlink ?? false,
    rebuild: raw.rebuild,
    declared: Object.keys(raw),
    publish,
    origin: c.at(base, true),
    origins: {
      size: raw.size !== undefined ? c.at(p('size')) : undefined,
      source: raw.source !== undefined ? c.at(p('source', srcKeys[0] ?? '')) : undefined,
      format: raw.format !== undefined ? c.at(p('format')) : undefined,
    },
  };
}

/** The name of the secret reconcile keeps for an encrypted image a VM uses (no YAML name has a '/'). */
export const diskSecretName = (image: string) => `image/${image}`;

/**
 * Every encrypted image has a libvirt secret (usage volume, its path) holding its passphrase:
 * QEMU opens it with that (a VM's disk), libvirt's qemu-img creates a pool volume with it, and
 * a changed passphraseFile re-keys the image through it (the secret still holds the old
 * passphrase: see tools/luks-rekey.ts). One declared under secrets: with that usage, or else
 * one reconcile keeps itself, from the image's passphraseFile — an object like any declared
 * secret (recorded, updated, pruned with the image once no domain uses it).
 */
function addDiskSecrets(state: DesiredState): void {
  for (const img of Object.values(state.images)) {
    const usage = img.encryption ? imageSecretUsage(state, img) : undefined;
    if (usage) addImageSecret(state, img, usage);
  }
}

function addImageSecret(state: DesiredState, img: ImageSpec, p: string): void {
  if (Object.values(state.secrets).some((s) => s.usage === 'volume' && s.usageId === p)) return;
  state.secrets[diskSecretName(img.name)] = {
    name: diskSecretName(img.name),
    usage: 'volume',
    usageId: p,
    description: `passphrase of images.${img.name} (virt-reconcile)`,
    valueFile: img.encryption!.passphraseFile,
    encoding: 'raw',
    adopt: false,
    origin: img.origin,
  };
}

/** Where a network disk is, and how it authenticates: what libvirt would refuse, said first. */
function checkNetworkDisk(c: Checker, at: FieldPath, net: NonNullable<DiskInput['network']>, secrets: Record<string, SecretInput>): void {
  if (net.protocol !== 'nbd' && net.name === undefined) c.err(at, `missing required field "name": ${NETWORK_NAME[net.protocol]}`, true);
  if (net.protocol === 'iscsi' && net.name !== undefined && !/^iqn\.\d{4}-\d{2}\.[^/]+\/\d+$/.test(net.name))
    c.err([...at, 'name'], `must be the target's IQN and a LUN, such as iqn.2026-01.com.example:store/1 (got ${JSON.stringify(net.name)})`);
  if (net.protocol === 'rbd' && net.name !== undefined && !/^[^/]+\/[^/]+$/.test(net.name)) c.err([...at, 'name'], `must be POOL/IMAGE (got ${JSON.stringify(net.name)})`);
  if ((net.protocol === 'http' || net.protocol === 'https') && net.name !== undefined && !net.name.startsWith('/'))
    c.err([...at, 'name'], `must be the path on the server, starting with / (got ${JSON.stringify(net.name)})`);
  if (net.auth) {
    const want = NETWORK_AUTH_USAGE[net.protocol];
    const s = secrets[net.auth.secret];
    if (!want) c.err([...at, 'auth'], `${net.protocol} disks take no auth (iscsi and rbd do)`, true);
    else if (!s) c.err([...at, 'auth', 'secret'], `refers to secret ${JSON.stringify(net.auth.secret)}, which is not declared under secrets`);
    else if (s.usage !== want) c.err([...at, 'auth', 'secret'], `an ${net.protocol} disk needs a secret of usage ${want}; secrets.${net.auth.secret} has usage ${s.usage}`);
  }
}

const NETWORK_NAME: Record<string, string> = {
  iscsi: "the target's IQN and LUN (IQN/LUN)",
  rbd: 'the Ceph pool and image (POOL/IMAGE)',
  http: 'the path on the server',
  https: 'the path on the server',
};
const NETWORK_AUTH_USAGE: Partial<Record<string, 'iscsi' | 'ceph'>> = { iscsi: 'iscsi', rbd: 'ceph' };

/** The usage type a pool's auth needs its secret to have: CHAP is libvirt's iscsi usage. */
const AUTH_USAGE = { chap: 'iscsi', ceph: 'ceph' } as const;

function checkSecret(c: Checker, name: string, raw: SecretInput): SecretSpec | undefined {
  const base: FieldPath = ['secrets', name];
  const before = c.errors.length;
  // The one field that holds the usage id, by usage type (libvirt's <usage> element).
  const idField = raw.usage === 'volume' ? 'volume' : raw.usage === 'iscsi' ? 'target' : 'name';
  for (const f of ['volume', 'target', 'name'] as const) {
    if (raw[f] !== undefined && f !== idField) c.err([...base, f], `not used by usage ${raw.usage} (it takes ${idField})`, true);
  }
  if (idField !== 'name' && raw[idField] === undefined)
    c.err(base, `missing required field "${idField}": usage ${raw.usage} is known to libvirt by ${idField === 'volume' ? "the volume's path" : "the target's IQN"}`, true);
  if (raw.valueFile === undefined && !raw.adopt)
    c.err(base, 'missing required field "valueFile": the file holding the value (only an adopted secret may leave its value as it is)', true);
  if (c.errors.length > before) return undefined;
  return {
    name,
    usage: raw.usage,
    // A volume is known by its path: one file, one spelling.
    usageId: idField === 'volume' ? normalizePath(raw.volume!) : (raw[idField] ?? name),
    description: raw.description,
    valueFile: raw.valueFile,
    encoding: raw.encoding ?? (raw.usage === 'ceph' ? 'base64' : 'raw'),
    adopt: raw.adopt ?? false,
    origin: c.at(base, true),
  };
}

function checkPool(c: Checker, name: string, raw: PoolInput, secrets: Record<string, SecretInput>): PoolSpec | undefined {
  const base: FieldPath = ['pools', name];
  const before = c.errors.length;
  const rules = POOL_SOURCE_FIELDS[raw.type as PoolType];
  const src = raw.source ?? {};
  if (rules.needsPath && raw.path === undefined) c.err(base, `missing required field "path": ${article(raw.type)} pool needs its target path`, true);
  const bad = raw.path !== undefined && rules.needsPath ? systemPoolPlace(normalizePath(raw.path)) : undefined;
  if (bad) c.err([...base, 'path'], `${raw.path} is refused: ${bad}; a pool's directory holds (and on prune loses) its volumes`);
  for (const group of rules.required) {
    if (!group.some((f) => src[f as keyof PoolSourceInput] !== undefined)) {
      c.err(raw.source ? [...base, 'source'] : base, `${article(raw.type)} pool needs source.${group.join(' or source.')}`, !raw.source);
    }
  }
  for (const f of Object.keys(src) as (keyof PoolSourceInput)[]) {
    if (!rules.allowed.includes(f)) {
      c.err([...base, 'source', f], `not used by ${article(raw.type)} pool (it takes: ${rules.allowed.join(', ') || 'no source'})`, true);
    }
  }
  if (src.format !== undefined && rules.formats && !rules.formats.includes(src.format)) {
    c.err([...base, 'source', 'format'], `must be one of: ${rules.formats.join(', ')} for ${article(raw.type)} pool (got ${JSON.stringify(src.format)})`);
  }
  if (src.auth) {
    const a = src.auth;
    const at: FieldPath = [...base, 'source', 'auth'];
    if ((a.secret === undefined) === (a.secretFile === undefined)) c.err(at, 'set exactly one of secretFile (a file) or secret (a declared secret)', true);
    const s = a.secret !== undefined ? secrets[a.secret] : undefined;
    if (a.secret !== undefined && !s) c.err([...at, 'secret'], `refers to secret ${JSON.stringify(a.secret)}, which is not declared under secrets`);
    else if (s && AUTH_USAGE[a.type] && s.usage !== AUTH_USAGE[a.type])
      c.err([...at, 'secret'], `auth type ${a.type} needs a secret of usage ${AUTH_USAGE[a.type]}; secrets.${a.secret} has usage ${s.usage}`);
    const want = raw.type === 'rbd' ? 'ceph' : 'chap';
    if (src.auth.type !== want) c.err([...base, 'source', 'auth', 'type'], `${article(raw.type)} pool takes auth type ${want} (got ${JSON.stringify(src.auth.type)})`);
  }
  if (raw.type === 'iscsi-direct' && src.initiator !== undefined && !/^iqn\.\d{4}-\d{2}\./.test(src.initiator)) {
    c.err([...base, 'source', 'initiator'], `must be an iSCSI qualified name such as iqn.2024-01.com.example:host (got ${JSON.stringify(src.initiator)})`);
  }
  if (raw.deleteStorage && !STORAGE_POOLS.includes(raw.type)) {
    c.err([...base, 'deleteStorage'], `${article(raw.type)} pool has no storage on this host to delete (deleteStorage applies to: ${STORAGE_POOLS.join(', ')})`);
  }
  if (c.errors.length > before) return undefined;
  return {
    name,
    type: raw.type,
    path: raw.path === undefined || !rules.needsPath ? raw.path : normalizePath(raw.path),
    autostart: raw.autostart ?? true,
    active: raw.active ?? true,
    adopt: raw.adopt ?? false,
    build: raw.build ?? raw.active ?? true,
    deleteStorage: raw.deleteStorage ?? false,
    declared: [...Object.keys(raw), ...Object.keys(raw.source ?? {}).map((k) => `source.${k}`)],
    source: src,
    permissions: permissions(raw.permissions),
    capacityAlert: raw.capacityAlert === undefined ? undefined : Number(String(raw.capacityAlert).slice(0, -1)),
    origin: c.at(base, true),
  };
}

function checkVm(
  c: Checker,
  name: string,
  raw: VmInput,
  defaults: DiskPolicyInput | undefined,
  images: Record<string, ImageInput>,
  secrets: Record<string, SecretInput>,
): VmSpec | undefined {
  const base: FieldPath = ['vms', name];
  const before = c.errors.length;
  let create: VmSpec['create'];
  if (raw.create) {
    const memory = c.size([...base, 'create', 'memory'], raw.create.memory, 1024 * 1024);
    if (memory !== undefined) create = { memory, vcpus: raw.create.vcpus };
  }
  const targets = new Map<string, number>();
  const disks: DiskSpec[] = (raw.disks ?? []).map((d, i) => {
    const dp: FieldPath = [...base, 'disks', i];
    const merged = { ...(defaults ?? {}), ...d };
    if ([d.image, d.path, d.network].filter((x) => x !== undefined).length !== 1)
      c.err(dp, 'set exactly one of image (a declared image), path (a file or block device) or network (a disk served over the network)');
    const net = d.network;
    if (net) checkNetworkDisk(c, [...dp, 'network'], net, secrets);
    // QEMU's curl driver only reads: an http(s) disk is read-only.
    if ((net?.protocol === 'http' || net?.protocol === 'https') && d.readonly === false)
      c.err([...dp, 'readonly'], `an ${net.protocol} disk is read-only (QEMU reads it over ${net.protocol}); remove readonly: false`);
    if (d.image !== undefined && !(d.image in images)) {
      c.err([...dp, 'image'], `refers to image ${JSON.stringify(d.image)}, which is not declared under images`);
    }
    const img = d.image !== undefined ? images[d.image] : undefined;
    if ((img?.format ?? 'qcow2') === 'vhdx' && img) c.err([...dp, 'image'], `images.${d.image} is vhdx, which libvirt cannot attach; use qcow2, raw, vhd or vmdk for VM disks`);
    const device = d.device ?? 'disk';
    // A CD-ROM takes its bus from its own declaration (default sata): defaults.disk.bus is
    // usually virtio, which has no removable media.
    const bus: DiskSpec['bus'] = device === 'cdrom' ? (d.bus ?? 'sata') : (merged.bus ?? 'virtio');
    if (device === 'cdrom') {
      if (bus !== 'sata' && bus !== 'scsi' && bus !== 'ide')
        c.err([...dp, d.bus !== undefined ? 'bus' : 'device'], `a cdrom needs bus sata, scsi or ide (${bus} has no removable media)`);
      if (d.readonly === false) c.err([...dp, 'readonly'], 'a cdrom is always read-only; remove readonly: false');
    }
    if (d.target !== undefined) {
      if (!BUS_PREFIX[bus].test(d.target)) c.err([...dp, 'target'], `target ${d.target} does not fit bus ${bus} (${bus} targets look like ${BUS_PREFIX[bus].source.slice(1)}…)`);
      const prev = targets.get(d.target);
      if (prev !== undefined) c.err([...dp, 'target'], `target ${d.target} is already used by disks[${prev}]`);
      targets.set(d.target, i);
    }
    // libvirt refuses these elsewhere ("Only ide and scsi disk support wwn", "Only scsi disk
    // supports vendor and product"): said here, with the position, before anything is changed.
    if (d.wwn !== undefined && bus !== 'scsi' && bus !== 'ide') c.err([...dp, 'wwn'], `wwn needs bus scsi or ide (libvirt gives other buses no wwn); got bus ${bus}`);
    for (const f of ['vendor', 'product'] as const) {
      if (d[f] !== undefined && bus !== 'scsi') c.err([...dp, f], `${f} needs bus scsi (libvirt sets SCSI inquiry data only); got bus ${bus}`);
    }
    if (merged.io === 'native' && merged.cache !== undefined && merged.cache !== 'none' && merged.cache !== 'directsync') {
      c.err(
        [...dp, d.io !== undefined ? 'io' : 'cache'],
        `io: native needs cache none or directsync (O_DIRECT); got cache ${merged.cache}. Use io: threads or io_uring with cache ${merged.cache}`,
      );
    }
    const network = net ? { ...net, format: net.format ?? 'raw' } : undefined;
    const readonly = device === 'cdrom' || net?.protocol === 'http' || net?.protocol === 'https' || (merged.readonly ?? false);
    return { ...merged, network, device, bus, readonly, origin: c.at(dp) } as DiskSpec;
  });
  if (c.errors.length > before) return undefined;
  return { name, create, disks, origin: c.at(base, true) };
}

/** A URL as an error message may show it: whatever stands before an @ (a key, a password) hidden. */
const hideUserinfo = (url: string) => url.replace(/^([a-z0-9+.-]*:\/\/)[^/]*@/i, '$1***@');

/** A `copyTo:` entry as a target, or what is wrong with it. */
function offsiteTarget(t: {
  url: string;
  endpoint?: string;
  region?: string;
  pathStyle?: boolean;
  credentialsFile?: string;
  identityFile?: string;
  knownHostsFile?: string;
}): OffsiteTarget | string {
  const allowed = 's3://BUCKET/PREFIX, azure://ACCOUNT/CONTAINER/PREFIX or ssh://[USER@]HOST[:PORT]/PATH';
  // Not echoed whole: a pasted connection string or a signed URL is a secret.
  if (!/^[a-z][a-z0-9+.-]*:\/\//i.test(t.url)) return `not a URL of a place: use ${allowed}`;
  // Before parsing: the URL parser resolves "..", and a path must say where it goes as written.
  if (/(^|\/)(\.|%2e){1,2}(\/|$)/i.test(t.url.replace(/^[a-z0-9+.-]*:\/\/[^/]*/i, ''))) return `${hideUserinfo(t.url).split('?')[0]}: no . or .. in the path`;
  let u: URL;
  try {
    u = new URL(t.url);
  } catch {
    return `${hideUserinfo(t.url).split('?')[0]} is not a URL: use ${allowed}`;
  }
  if (u.password || (u.username && u.protocol !== 'ssh:'))
    return `${hideUserinfo(t.url)}: credentials do not go in the URL (they would be in the YAML and in logs); use credentialsFile (s3, azure) or identityFile (ssh)`;
  if (u.search || u.hash) return `${u.protocol}//${u.host}${u.pathname}: takes no ?query or #fragment (a signed URL's query is a credential: use credentialsFile)`;
  const parts = decodeURIComponent(u.pathname).split('/').filter(Boolean);
  if (parts.some((x) => x === '..' || x === '.')) return `${t.url}: no . or .. in the path`;
  const only = (kind: string, fields: (keyof typeof t)[]) => {
    const wrong = (['endpoint', 'region', 'pathStyle', 'credentialsFile', 'identityFile', 'knownHostsFile'] as const).filter((f) => t[f] !== undefined && !fields.includes(f));
    return wrong.length ? `${t.url}: ${wrong.join(', ')} ${wrong.length > 1 ? 'are' : 'is'} not for ${kind} (it takes ${fields.join(', ') || 'nothing else'})` : undefined;
  };
  const url = `${u.protocol}//${u.username ? `${u.username}@` : ''}${u.host}${u.pathname.replace(/\/+$/, '')}`;
  switch (u.protocol) {
    case 's3:': {
      if (!u.hostname) return `${t.url}: name the bucket: s3://BUCKET/PREFIX`;
      if (t.endpoint?.includes('@')) return `${t.url}: endpoint holds credentials; put them in credentialsFile (they would be in the YAML and in logs)`;
      if (t.endpoint !== undefined && !/^https?:\/\/[^/\s]+\/?$/.test(t.endpoint)) return `${t.url}: endpoint must be http(s)://HOST[:PORT] (got ${JSON.stringify(t.endpoint)})`;
      return (
        only('s3', ['endpoint', 'region', 'pathStyle', 'credentialsFile']) ?? {
          kind: 's3',
          // A place is known by its URL and its endpoint: another server is another place.
          url: t.endpoint ? `${url} via ${t.endpoint.replace(/\/$/, '')}` : url,
          bucket: u.hostname,
          prefix: parts.join('/'),
          endpoint: t.endpoint,
          region: t.region,
          pathStyle: t.pathStyle ?? false,
          credentialsFile: t.credentialsFile,
        }
      );
    }
    case 'azure:':
      if (!u.hostname || !parts.length) return `${t.url}: name the account and the container: azure://ACCOUNT/CONTAINER/PREFIX`;
      if (!/^(?=.{3,63}$)[a-z0-9]+(-[a-z0-9]+)*$/.test(parts[0]!))
        return `${t.url}: ${JSON.stringify(parts[0])} is not an Azure container name (3 to 63 lowercase letters, digits and single hyphens, starting and ending with a letter or digit)`;
      return (
        only('azure', ['credentialsFile']) ?? {
          kind: 'azure',
          url,
          account: u.hostname,
          container: parts[0]!,
          prefix: parts.slice(1).join('/'),
          credentialsFile: t.credentialsFile,
        }
      );
    case 'ssh:':
      if (!u.hostname || !parts.length) return `${t.url}: name the host and an absolute directory: ssh://[USER@]HOST[:PORT]/PATH`;
      if (/["\\\n]/.test(parts.join('/'))) return `${t.url}: the path may not hold quotes, backslashes or newlines`;
      return (
        only('ssh', ['identityFile', 'knownHostsFile']) ?? {
          kind: 'ssh',
          url,
          user: u.username || undefined,
          host: u.hostname,
          port: u.port ? Number(u.port) : undefined,
          path: `/${parts.join('/')}`,
          identityFile: t.identityFile,
          knownHostsFile: t.knownHostsFile,
        }
      );
    default:
      return `${t.url}: unknown kind of place ${JSON.stringify(u.protocol.replace(/:$/, ''))}; use ${allowed}`;
  }
}

function checkBackup(c: Checker, name: string, raw: BackupInput, vms: Record<string, VmInput>): BackupSpec | undefined {
  const base: FieldPath = ['backups', name];
  const before = c.errors.length;
  const vm = vms[raw.vm];
  if (!vm) c.err([...base, 'vm'], `refers to vm ${JSON.stringify(raw.vm)}, which is not declared under vms`);
  cronField(c, [...base, 'schedule'], raw.schedule, raw.timezone);
  timezoneField(c, [...base, 'timezone'], raw.timezone);
  const mode = raw.mode ?? 'snapshot';
  if (mode !== 'snapshot' && raw.destination === undefined) {
    c.err(base, `missing required field "destination": mode ${mode} writes copies to a directory`, true);
  }
  if (mode === 'snapshot' && raw.destination !== undefined) {
    c.err([...base, 'destination'], 'mode snapshot keeps internal snapshots inside the image; destination is for external, copy and incremental modes');
  }
  if (mode !== 'incremental' && raw.fullEvery !== undefined)
    c.err([...base, 'fullEvery'], `is for mode incremental (how many backups a chain holds before a new full one); this schedule's mode is ${mode}`);
  if (vm && raw.disks) {
    // CD-ROMs hold read-only media, network disks live on their server: nothing to back up here.
    const declared = (vm.disks ?? []).filter((d) => d.device !== 'cdrom' && !d.network).map((d) => d.target);
    if (declared.length && declared.every((t: unknown) => t !== undefined)) {
      raw.disks.forEach((t, i) => {
        if (!declared.includes(t)) c.err([...base, 'disks', i], `vm ${raw.vm} declares no disk ${t} (declared: ${declared.join(', ')})`);
      });
    }
  }
  const maxAgeSeconds = raw.maxAge === undefined ? undefined : c.duration([...base, 'maxAge'], raw.maxAge);
  // keep: N is restic's --keep-last N; an object is its rules (within: a duration).
  const k = raw.keep;
  const keep =
    k === undefined
      ? undefined
      : typeof k === 'number'
        ? { last: k }
        : (({ within, ...counts }) => ({ ...counts, withinSeconds: within === undefined ? undefined : c.duration([...base, 'keep', 'within'], within) }))(k);
  // Each entry parsed once: a target, or what is wrong with it (at its own index); a place named twice is refused.
  const copyTo: OffsiteTarget[] = [];
  (raw.copyTo ?? []).forEach((t, i) => {
    const target = offsiteTarget(typeof t === 'string' ? { url: t } : t);
    if (typeof target === 'string') c.err([...base, 'copyTo', i, ...(typeof t === 'string' ? [] : ['url'])], target);
    else if (copyTo.some((x) => x.url === target.url)) c.err([...base, 'copyTo', i], `${target.url} is listed twice`);
    else copyTo.push(target);
  });
  if (copyTo.length && mode === 'snapshot')
    c.err([...base, 'copyTo'], 'mode snapshot keeps internal snapshots inside the image: there is no copy to send off the host (use copy, external or incremental)');
  const verifyEverySeconds = typeof raw.verify === 'object' && raw.verify.every !== undefined ? c.duration([...base, 'verify', 'every'], raw.verify.every) : undefined;
  // A hook's timeout is a timer: one longer than a timer can wait would fire at once.
  const timeoutSeconds = raw.hooks?.timeout === undefined ? 300 : c.duration([...base, 'hooks', 'timeout'], raw.hooks.timeout, TIMER_MAX_SECONDS);
  if (c.errors.length > before) return undefined;
  return {
    name,
    vm: raw.vm,
    disks: raw.disks,
    schedule: raw.schedule,
    timezone: raw.timezone,
    mode,
    destination: raw.destination,
    fullEvery: raw.fullEvery ?? 7,
    maxFailures: raw.maxFailures,
    copyTo,
    keep,
    maxAgeSeconds,
    quiesce: raw.quiesce ?? false,
    hooks: { pre: raw.hooks?.pre ?? [], post: raw.hooks?.post ?? [], timeoutSeconds: timeoutSeconds! },
    verify: typeof raw.verify === 'object' ? (raw.verify.after ?? true) : (raw.verify ?? false),
    verifyEverySeconds,
    origin: c.at(base, true),
  };
}

/** Cycles through source.image / source.backing would never finish building. */
function checkImageGraph(state: DesiredState, declared: Set<string>, errs: ConfigError[], where: (name: string) => { file: string; line: number; col: number }): void {
  const dep = (s: ImageSpec) => sourceImage(s.source);
  const acyclic = new Set<string>();
  for (const spec of Object.values(state.images)) {
    const d = dep(spec);
    if (d !== undefined && !declared.has(d)) {
      const w = where(spec.name);
      errs.push({ ...w, field: `images.${spec.name}.source`, message: `refers to image ${JSON.stringify(d)}, which is not declared under images` });
      continue;
    }
    // Every image on a walk that ends without a cycle is marked acyclic, so a later walk stops
    // there: a chain of 100,000 overlays is checked in linear time, not quadratic.
    if (acyclic.has(spec.name)) continue;
    const seen = [spec.name];
    const onPath = new Set(seen);
    let cur = d;
    let cycle = false;
    while (cur !== undefined && state.images[cur] && !acyclic.has(cur)) {
      if (onPath.has(cur)) {
        const w = where(spec.name);
        errs.push({ ...w, field: `images.${spec.name}.source`, message: `images depend on each other in a cycle: ${[...seen, cur].join(' -> ')}` });
        cycle = true;
        break;
      }
      seen.push(cur);
      onPath.add(cur);
      cur = dep(state.images[cur]!);
    }
    if (!cycle) for (const n of seen) acyclic.add(n);
  }
}

export function buildDesiredState(files: ParsedFile[], resolve: Resolver = (p) => p): { state?: DesiredState; errors: ConfigError[] } {
  const errors: ConfigError[] = [];
  const owner: { [K in (typeof KINDS)[number]]: Record<string, { c: Checker; raw: NonNullable<FileInput[K]>[string] }> } = {
    pools: {},
    images: {},
    vms: {},
    backups: {},
    secrets: {},
  };
  const checkers = files.map((f) => new Checker(f.source));
  let connection: { value: string; at: string } | undefined;
  const windows: MaintenanceWindow[] = [];
  const defaults: { disk?: { value: DiskPolicyInput; at: string }; image?: { value: ImageDefaultsInput; at: string } } = {};

  files.forEach((f, i) => {
    const c = checkers[i]!;
    const d: Partial<FileInput> = f.data ?? {};
    if (d.connection !== undefined) {
      if (connection && connection.value !== d.connection) {
        c.err(['connection'], `conflicts with connection ${JSON.stringify(connection.value)} at ${connection.at}; declare it once`);
      } else connection ??= { value: d.connection, at: c.at(['connection']) };
    }
    for (const k of ['disk', 'image'] as const) {
      if (d.defaults?.[k] === undefined) continue;
      const prev = defaults[k];
      if (prev && JSON.stringify(prev.value) !== JSON.stringify(d.defaults[k])) {
        c.err(['defaults', k], `conflicts with defaults.${k} at ${prev.at}; declare defaults once`);
      } else defaults[k] ??= { value: d.defaults[k], at: c.at(['defaults', k]) };
    }
    const claim = <K extends (typeof KINDS)[number]>(kind: K) => {
      for (const [name, raw] of Object.entries(d[kind] ?? {}) as [string, NonNullable<FileInput[K]>[string]][]) {
        const prev = owner[kind][name];
        if (prev) c.err([kind, name], `${kind}.${name} is already declared at ${prev.c.at([kind, name], true)}; a name may be declared once across all files`, true);
        else (owner[kind] as Record<string, { c: Checker; raw: typeof raw }>)[name] = { c, raw };
      }
    };
    for (const kind of KINDS) claim(kind);
    (d.windows ?? []).forEach((w, j) => {
      const at: FieldPath = ['windows', j];
      const before = c.errors.length;
      cronField(c, [...at, 'schedule'], w.schedule, w.timezone);
      timezoneField(c, [...at, 'timezone'], w.timezone);
      const seconds = c.duration([...at, 'duration'], w.duration, 31 * 86400);
      // A schedule that never fires (30 February) would hold every disruptive change for ever.
      if (c.errors.length === before && !new Cron(w.schedule, { paused: true, timezone: w.timezone }).nextRun())
        c.err([...at, 'schedule'], `never fires (${JSON.stringify(w.schedule)} names no date that exists): disruptive changes would wait for ever`);
      if (c.errors.length === before && seconds !== undefined) windows.push({ schedule: w.schedule, durationSeconds: seconds, timezone: w.timezone, origin: c.at(at) });
    });
  });

  const state: DesiredState = {
    connection: connection?.value,
    files: files.map((f) => f.source.path),
    pools: {},
    images: {},
    vms: {},
    backups: {},
    secrets: {},
    ...(windows.length ? { windows } : {}),
  };
  const rawOf = <K extends (typeof KINDS)[number]>(kind: K) =>
    Object.fromEntries(Object.entries(owner[kind]).map(([n, v]) => [n, v.raw])) as Record<string, NonNullable<FileInput[K]>[string]>;
  const poolInputs = rawOf('pools');
  const secretInputs = rawOf('secrets');
  // One usage, one secret: libvirt keeps a single secret per usage type and id.
  const usageOwner = new Map<string, { name: string; at: string }>();
  for (const [name, { c, raw }] of Object.entries(owner.secrets!)) {
    const s = checkSecret(c, name, raw);
    if (!s) continue;
    const key = JSON.stringify([s.usage, s.usageId]);
    const other = usageOwner.get(key);
    if (other) {
      c.err(['secrets', name], `usage ${s.usage} ${JSON.stringify(s.usageId)} is also the usage of secrets.${other.name} (${other.at}); libvirt keeps one secret per usage`, true);
      continue;
    }
    usageOwner.set(key, { name, at: c.at(['secrets', name], true) });
    state.secrets[name] = s;
  }
  const imageInputs = rawOf('images');
  const vmInputs = rawOf('vms');
  for (const [name, { c, raw }] of Object.entries(owner.pools!)) {
    const s = checkPool(c, name, raw, secretInputs);
    // Checked again through symlinks: libvirt's pool-build chmods and chowns the target.
    const real = s?.path && FILE_POOLS.includes(s.type) ? resolve(s.path) : undefined;
    const bad = real !== undefined && real !== s!.path ? systemPoolPlace(real) : undefined;
    if (bad) c.err(['pools', name, 'path'], `${s!.path} resolves to ${real}, which is refused: ${bad}`);
    else if (s) state.pools[name] = s;
  }
  // One file, one declaration: image paths and file-pool volume paths are compared by what
  // they resolve to, so that no two spellings of one file are built (and wiped) in turn.
  const fileOwner = new Map<string, { name: string; at: string; where: string }>();
  // One volume, one declaration, in pools of every type (logical volumes, iSCSI LUNs, …).
  const volumeOwner = new Map<string, { name: string; at: string }>();
  for (const [name, { c, raw }] of Object.entries(owner.images!)) {
    const s = checkImage(c, name, raw, defaults.image?.value, poolInputs);
    if (!s) continue;
    const loc = s.location;
    if (loc.kind === 'pool') {
      const field: FieldPath = ['images', name, raw.volume !== undefined ? 'volume' : 'pool'];
      const key = JSON.stringify([loc.pool, loc.volume]);
      const other = volumeOwner.get(key);
      if (other) {
        c.err(field, `volume ${loc.volume} in pool ${loc.pool} is also declared by images.${other.name} (${other.at}); a volume may be declared once`);
        continue;
      }
      volumeOwner.set(key, { name, at: c.at(field) });
    }
    const pool = loc.kind === 'pool' ? state.pools[loc.pool] : undefined;
    const file = loc.kind === 'path' ? loc.path : pool?.path && FILE_POOLS.includes(pool.type) ? `${pool.path}/${loc.kind === 'pool' ? loc.volume : ''}` : undefined;
    if (file !== undefined) {
      const field: FieldPath = ['images', name, loc.kind === 'path' ? 'path' : 'pool'];
      const real = resolve(file);
      const bad = loc.kind === 'path' && real !== file ? systemPlace(real) : undefined;
      if (bad) {
        c.err(field, `${file} resolves to ${real}, which is refused: ${bad}`);
        continue;
      }
      const other = fileOwner.get(real);
      if (other) {
        c.err(
          field,
          other.where === file
            ? `path ${raw.path !== file ? `${raw.path} (that is ${file})` : file} is also the path of images.${other.name} (${other.at})`
            : `${loc.kind === 'path' ? file : `volume ${loc.kind === 'pool' ? loc.volume : ''} in pool ${pool!.name} (${file})`} is the same file as ${other.where} of images.${other.name} (${other.at})${real !== file ? `: both are ${real}` : ''}; a file may be declared once`,
        );
        continue;
      }
      fileOwner.set(real, { name, at: c.at(field), where: loc.kind === 'path' ? file : `volume ${loc.kind === 'pool' ? loc.volume : ''} in pool ${pool!.name} (${file})` });
    }
    state.images[name] = s;
  }
  // A plain copy of an encrypted image writes its data out decrypted: only on request.
  for (const [name, s] of Object.entries(state.images)) {
    // An overlay's backing chain would need the base's secret too, which this version does not
    // give libvirt: a VM on it would not start.
    const base = s.source.kind === 'backing' && 'image' in s.source ? state.images[s.source.image] : undefined;
    if (base?.encryption) {
      owner.images![name]!.c.err(['images', name, 'source', 'backing'], `images.${base.name} is encrypted; overlays on an encrypted image are not supported by this version`);
      delete state.images[name];
      continue;
    }
    const dep = s.source.kind === 'image' ? state.images[s.source.image] : undefined;
    const { c, raw } = owner.images![name]!;
    if (dep?.encryption && !s.encryption && !raw.decrypt) {
      c.err(
        ['images', name, 'source', 'image'],
        `images.${dep.name} is encrypted; a copy without encryption writes its data out decrypted. Declare encryption on images.${name}, or decrypt: true to mean it`,
      );
      delete state.images[name];
    }
  }
  for (const [name, { c, raw }] of Object.entries(owner.vms!)) {
    const s = checkVm(c, name, raw, defaults.disk?.value, imageInputs, secretInputs);
    if (s) state.vms[name] = s;
  }
  addDiskSecrets(state);
  for (const [name, { c, raw }] of Object.entries(owner.backups!)) {
    const s = checkBackup(c, name, raw, vmInputs);
    if (s) state.backups[name] = s;
  }
  // What the YAML alone shows cannot work (plan checks again against the domain as libvirt has
  // it: disks the YAML does not declare, formats it does not say).
  const specs = Object.values(state.backups);
  const conflicts = new Map(modeConflicts(specs).map((x) => [x.name, x.message]));
  for (const spec of specs) {
    const { c, raw } = owner.backups![spec.name]!;
    const at: FieldPath = raw.mode !== undefined ? ['backups', spec.name, 'mode'] : ['backups', spec.name];
    const problems = [...modeProblems(spec, declaredDisks(state, spec.vm)), ...(conflicts.has(spec.name) ? [conflicts.get(spec.name)!] : [])];
    for (const m of problems) c.err(at, m, raw.mode === undefined);
    if (problems.length) delete state.backups[spec.name];
  }
  // One object, one image: targets compared by place and key, however their URLs are spelled.
  const publishers = new Map<string, string>();
  for (const spec of Object.values(state.images)) {
    spec.publish.forEach((t, i) => {
      const other = publishers.get(t.to);
      if (other && other !== spec.name)
        owner.images![spec.name]!.c.err(['images', spec.name, 'publish', i, 'to'], `${t.to} is published by images.${other} too; one object holds one image`);
      else publishers.set(t.to, spec.name);
    });
  }
  for (const c of checkers) errors.push(...c.errors);
  checkImageGraph(state, new Set(Object.keys(owner.images!)), errors, (name) => {
    const { c } = owner.images![name]!;
    const p = locate(c.file, ['images', name, 'source'], {});
    return { file: c.file.path, line: p.line, col: p.col };
  });
  return errors.length ? { errors } : { state, errors };
}

/** source.url with its checksum (exactly one of sha256, checksumUrl) and its credentials. */
function urlSource(c: Checker, p: (...f: FieldPath) => FieldPath, s: NonNullable<ImageInput['source']>): ImageSource {
  const url = s.url!;
  const bad = (field: string, u: string): boolean => {
    let parsed: URL;
    try {
      parsed = new URL(u);
    } catch {
      c.err(p('source', field), `is not a URL (got ${JSON.stringify(u)})`);
      return true;
    }
    if (parsed.protocol !== 'http:' && parsed.protocol !== 'https:') {
      c.err(p('source', field), `must be an http:// or https:// URL (got ${parsed.protocol})`);
      return true;
    }
    if (parsed.username || parsed.password) {
      c.err(p('source', field), 'holds credentials; put them in a file and name it under source.auth (bearerTokenFile or basicAuthFile)');
      return true;
    }
    return false;
  };
  bad('url', url);
  if (s.checksumUrl !== undefined) bad('checksumUrl', s.checksumUrl);
  if ((s.sha256 === undefined) === (s.checksumUrl === undefined))
    c.err(p('source'), 'a download is checked before it is used: set exactly one of sha256 (the digest itself) or checksumUrl (a SHA256SUMS file that lists it)');
  if (s.auth !== undefined && Object.keys(s.auth).length !== 1) c.err(p('source', 'auth'), 'set exactly one of bearerTokenFile or basicAuthFile');
  return { kind: 'url', url, sha256: s.sha256?.toLowerCase(), checksumUrl: s.checksumUrl, auth: s.auth };
}

/**
 * `publish:` entries as targets: s3:// and gs:// (through the S3-compatible XML API of
 * storage.googleapis.com, or an endpoint), azure:// (a VHD as a page blob). An endpoint means
 * an S3-compatible server, addressed path-style.
 */
function publishTargets(c: Checker, p: (...f: FieldPath) => FieldPath, raw: ImageInput, format: Format): PublishTarget[] {
  const out: PublishTarget[] = [];
  (raw.publish ?? []).forEach((t, i) => {
    const at = p('publish', i);
    if (raw.pool !== undefined) {
      c.err(at, 'publish is for images with path: in this version');
      return;
    }
    const gs = t.to.startsWith('gs://');
    if (t.to.startsWith('azure://') && (t.endpoint !== undefined || t.region !== undefined)) {
      c.err([...at, t.endpoint !== undefined ? 'endpoint' : 'region'], 'is for s3:// and gs:// targets; an azure:// target takes its endpoint from the connection string');
      return;
    }
    if (t.endpoint?.includes('@')) {
      c.err([...at, 'endpoint'], 'holds credentials; put them in credentialsFile (they would be in the YAML and in logs)');
      return;
    }
    if (t.endpoint !== undefined && !/^https?:\/\/[^/\s]+\/?$/.test(t.endpoint)) {
      c.err([...at, 'endpoint'], `must be http(s)://HOST[:PORT] (got ${JSON.stringify(t.endpoint)})`);
      return;
    }

    const endpoint = t.endpoint ?? (gs ? 'https://storage.googleapis.com' : (process.env.AWS_ENDPOINT_URL_S3 ?? process.env.AWS_ENDPOINT_URL));
    const place = offsiteTarget({
      url: gs ? t.to.replace(/^gs:/, 's3:') : t.to,
      ...(t.to.startsWith('azure://') ? {} : { endpoint, region: t.region ?? (gs ? 'auto' : undefined), pathStyle: endpoint !== undefined }),
      credentialsFile: t.credentialsFile,
    });
    if (typeof place === 'string') {
      c.err(
        [...at, t.to.startsWith('azure://') && (t.endpoint ?? t.region) !== undefined ? (t.endpoint !== undefined ? 'endpoint' : 'region') : 'to'],
        place.replace(/^s3:/, gs ? 'gs:' : 's3:'),
      );
      return;
    }
    if (place.kind === 'ssh') {
      c.err([...at, 'to'], 'must be an s3://, azure:// or gs:// URL');
      return;
    }
    if (!place.prefix) {
      c.err([...at, 'to'], `name the object: ${gs ? 'gs://BUCKET/OBJECT' : place.kind === 's3' ? 's3://BUCKET/KEY' : 'azure://ACCOUNT/CONTAINER/BLOB'}`);
      return;
    }
    // Known by where it is, however written (s3://b//k/, %2F): the canonical URL.
    const to = place.kind === 'azure' ? `azure://${place.account}/${place.container}/${place.prefix}` : `${gs ? 'gs' : 's3'}://${place.bucket}/${place.prefix}`;
    const pageBlob = place.kind === 'azure' && format === 'vhd';
    if (pageBlob && raw.vhd?.subformat !== 'fixed') c.err([...at, 'to'], 'Azure makes disks only from fixed VHDs (a page blob): declare vhd: { subformat: fixed }');
    if (out.some((x) => x.to === to)) c.err([...at, 'to'], `${to} is listed twice`);
    out.push({ to, place, pageBlob, prune: t.prune ?? false, origin: c.at(at) });
  });
  return out;
}

/** source.bootc: true, or its options; undefined when absent or false. */
function bootcInstall(c: Checker, p: (...f: FieldPath) => FieldPath, raw: NonNullable<ImageInput['source']>['bootc']): BootcInstall | undefined {
  if (!raw) return undefined;
  if (raw === true) return { kargs: [] };
  (raw.kargs ?? []).forEach((k, i) => {
    if (/\s/.test(k)) c.err(p('source', 'bootc', 'kargs', i), `one kernel argument per item, without white space (got ${JSON.stringify(k)})`);
  });
  // bootc takes sizes in MiB at the finest.
  const rootSize = raw.rootSize === undefined ? undefined : c.size(p('source', 'bootc', 'rootSize'), raw.rootSize, 1024 * 1024);
  return { kargs: raw.kargs ?? [], rootSize };
}

function cronField(c: Checker, at: FieldPath, schedule: string, timezone: string | undefined): void {
  const fields = String(schedule).trim().split(/\s+/);
  if (fields.length !== 5) {
    c.err(at, `must be a five-field cron expression "minute hour day-of-month month day-of-week" (got ${fields.length} fields)`);
    return;
  }
  try {
    new Cron(schedule, { paused: true, timezone });
  } catch (e) {
    c.err(at, `invalid cron expression: ${(e as Error).message}`);
  }
}

function timezoneField(c: Checker, at: FieldPath, timezone: string | undefined): void {
  if (timezone === undefined) return;
  try {
    new Intl.DateTimeFormat('en', { timeZone: timezone });
  } catch {
    c.err(at, `unknown time zone ${JSON.stringify(timezone)} (use an IANA name such as Europe/Berlin or UTC)`);
  }
}
