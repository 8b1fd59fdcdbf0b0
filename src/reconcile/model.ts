// The desired state after loading and validation: plain data, no YAML nodes.
import type { HostTarget } from './hosts.js';

export type Format = 'raw' | 'qcow2' | 'vhd' | 'vhdx' | 'vmdk';

/** Where a declaration stands, "file:line:col", for errors found after loading. */
export type Origin = string;

export type ImageSource =
  | { kind: 'blank' }
  | { kind: 'file'; file: string }
  | { kind: 'image'; image: string }
  | { kind: 'backing'; image: string }
  | { kind: 'backing'; path: string }
  /**
   * digest: the image ID (config digest) as observed for a plan; bootc: installed as a bootable
   * disk through bcvk instead of copied into a filesystem
   */
  | { kind: 'container'; ref: string; digest?: string; bootc?: BootcInstall }
  /** digest: what the directory holds (see sources/directory-digest.ts), as observed for a plan */
  | { kind: 'directory'; dir: string; digest?: string }
  | { kind: 'cloudInit'; files: CloudInitFiles }
  /** downloaded over HTTP(S), checked against sha256 (given, or read from checksumUrl) */
  | { kind: 'url'; url: string; sha256?: string; checksumUrl?: string; auth?: DownloadAuth };

/** How a bootc image is installed to a disk (bcvk to-disk's options). */
export interface BootcInstall {
  /** kernel arguments added at install (--karg, in order) */
  kargs: string[];
  /** the root filesystem's size in bytes (--root-size); default: the rest of the disk */
  rootSize?: number;
}

/** Credentials for a download, from a file: exactly one of them. */
export interface DownloadAuth {
  /** a file holding a bearer token */
  bearerTokenFile?: string;
  /** a file holding user:password */
  basicAuthFile?: string;
}

/** The files of a cloud-init NoCloud seed (an ISO labelled cidata), by their role. */
export interface CloudInitFiles {
  userData: string;
  metaData?: string;
  networkConfig?: string;
  vendorData?: string;
}

/** The declared image a source copies or overlays, if it names one (not a file or path). */
export function sourceImage(s: ImageSource): string | undefined {
  return s.kind === 'image' || (s.kind === 'backing' && 'image' in s) ? s.image : undefined;
}

export type Filesystem = 'ext4' | 'xfs' | 'btrfs';
/** The smallest image each mkfs makes a filesystem in (btrfs needs about 114 MiB, xfs 300 MiB). */
export const FILESYSTEM_MIN_SIZE: Record<Filesystem, number> = { ext4: 1024 * 1024, xfs: 300 * 1024 * 1024, btrfs: 114 * 1024 * 1024 };

export interface Qcow2Options {
  clusterSize?: number;
  compression?: 'zlib' | 'zstd';
  compressed?: boolean;
  preallocation?: 'off' | 'metadata' | 'falloc' | 'full';
  lazyRefcounts?: boolean;
  compat?: '0.10' | '1.1';
  refcountBits?: number;
  extendedL2?: boolean;
}

/** How an image's data is overwritten before reconcile deletes it (libvirt's vol-wipe algorithms). */
export const WIPE_ALGORITHMS = ['zero', 'nnsa', 'dod', 'bsi', 'gutmann', 'schneier', 'pfitzner7', 'pfitzner33', 'random'] as const;
export type WipeAlgorithm = (typeof WIPE_ALGORITHMS)[number];
/** What reconcile itself writes over an image file (the others are scrub patterns for pool volumes). */
export const FILE_WIPE_ALGORITHMS: readonly WipeAlgorithm[] = ['zero', 'random'];

export interface Permissions {
  owner?: number;
  group?: number;
  /** numeric mode, e.g. 0o600 */
  mode?: number;
}

export type ImageLocation = { kind: 'path'; path: string } | { kind: 'pool'; pool: string; volume: string };

export interface ImageSpec {
  name: string;
  location: ImageLocation;
  format: Format;
  /** bytes; undefined means "the size of the source" */
  size?: number;
  source: ImageSource;
  filesystem?: Filesystem;
  qcow2?: Qcow2Options;
  vmdk?: { adapterType?: 'ide' | 'buslogic' | 'lsilogic' | 'legacyESX'; subformat?: string };
  vhd?: { subformat?: 'dynamic' | 'fixed' };
  vhdx?: { subformat?: 'dynamic' | 'fixed' };
  encryption?: { format: 'luks'; passphraseFile: string; previousPassphraseFile?: string; iterTime?: number };
  permissions?: Permissions;
  protect: boolean;
  /** overwrite its data before reconcile deletes it (prune, destroy, a volume's replace) */
  wipe?: WipeAlgorithm;
  /** manage the image although reconcile did not create it (explicit, as terraform import) */
  adopt: boolean;
  /** the path is a symlink whose target is the image */
  followSymlink: boolean;
  /** the fields set on this object itself (not from defaults): all an adopted image may be changed by */
  declared: string[];
  /**
   * onChange: the image is made from its source and nothing else (a download, a directory, a
   * container image): a new source content rebuilds it without --allow-replace. Default: a
   * rebuild replaces the image and its data, so it needs --allow-replace.
   */
  rebuild?: 'onChange';
  /** copies of the finished image in object storage, uploaded when it is built or changed */
  publish: PublishTarget[];
  origin: Origin;
  /** positions of fields that plan-time checks may need to point at */
  origins: { size?: Origin; source?: Origin; format?: Origin };
}

export type PoolType = 'dir' | 'fs' | 'netfs' | 'logical' | 'disk' | 'iscsi' | 'iscsi-direct' | 'rbd';

/** Pools whose volumes are files (any format); the others hold raw block volumes. */
export const FILE_POOLS: readonly PoolType[] = ['dir', 'fs', 'netfs'];
/** Pools whose volumes (LUNs) exist on the target and cannot be created by libvirt. */
export const LUN_POOLS: readonly PoolType[] = ['iscsi', 'iscsi-direct'];
/** pools whose storage is a directory on this host that pool-build makes (and chmods) */
export const DIRECTORY_POOLS: readonly PoolType[] = ['dir', 'fs', 'netfs'];
/** pools with storage of their own here that libvirt's pool-delete removes */
export const STORAGE_POOLS: readonly PoolType[] = ['dir', 'fs', 'netfs', 'logical', 'disk'];
/** File extension of a volume's default name, by format. */
export const VOLUME_EXT: Record<Format, string> = { raw: 'img', qcow2: 'qcow2', vhd: 'vhd', vhdx: 'vhdx', vmdk: 'vmdk' };

export interface PoolSpec {
  name: string;
  type: PoolType;
  path?: string;
  autostart: boolean;
  active: boolean;
  /** manage a pool reconcile did not define */
  adopt: boolean;
  /** pool-build when it is created (default: when it is started) */
  build: boolean;
  /** on prune, its storage goes too (if reconcile made it and it is empty) */
  deleteStorage: boolean;
  /** the fields its declaration sets (an adopted pool is changed in these only, never by defaults) */
  declared: string[];
  source: {
    host?: string;
    dir?: string;
    format?: string;
    device?: string;
    name?: string;
    initiator?: string;
    /** the password or key: a file (a libvirt secret made for the pool), or a declared secret by name */
    auth?: { type: 'chap' | 'ceph'; username: string; secretFile?: string; secret?: string };
  };
  permissions?: Permissions;
  capacityAlert?: number;
  origin: Origin;
}

/** A disk served over the network (libvirt's <disk type='network'>), read by QEMU itself. */
export interface NetworkSource {
  protocol: 'nbd' | 'iscsi' | 'rbd' | 'http' | 'https';
  host: string;
  port?: number;
  /** nbd: the export; iscsi: IQN/LUN; rbd: pool/image; http(s): the path */
  name?: string;
  /** what QEMU reads through it (default raw) */
  format: 'raw' | 'qcow2';
  /** iscsi (CHAP) and rbd (cephx): a declared secret, by name */
  auth?: { username: string; secret: string };
}

export interface DiskSpec {
  /** a disk, or a CD-ROM drive (removable, read-only media: an ISO) */
  device: 'disk' | 'cdrom';
  image?: string;
  path?: string;
  network?: NetworkSource;
  target?: string;
  bus: 'virtio' | 'nvme' | 'sata' | 'scsi' | 'ide';
  cache?: 'none' | 'writethrough' | 'writeback' | 'directsync' | 'unsafe' | 'default';
  io?: 'native' | 'threads' | 'io_uring';
  discard?: 'unmap' | 'ignore';
  readonly: boolean;
  /** what the guest reads as the disk's identity (serial for every bus; wwn on scsi/ide; vendor and product on scsi) */
  serial?: string;
  wwn?: string;
  vendor?: string;
  product?: string;
  origin: Origin;
}

export interface VmSpec {
  name: string;
  create?: { memory: number; vcpus: number };
  disks: DiskSpec[];
  origin: Origin;
}

export type { KeepPolicy } from '../backups/retention.js';
import type { KeepPolicy } from '../backups/retention.js';

export type BackupMode = 'snapshot' | 'external' | 'copy' | 'incremental';

/** Where a backup is copied off the host (`copyTo:`); credentials come from files, never from the URL. */
export type OffsiteTarget =
  | { kind: 's3'; url: string; bucket: string; prefix: string; endpoint?: string; region?: string; pathStyle: boolean; credentialsFile?: string }
  | { kind: 'azure'; url: string; account: string; container: string; prefix: string; credentialsFile?: string }
  | { kind: 'ssh'; url: string; user?: string; host: string; port?: number; path: string; identityFile?: string; knownHostsFile?: string };

/** Where a finished image is published (`publish:`): one object, known by its URL. */
export interface PublishTarget {
  /** as written: s3://BUCKET/KEY, azure://ACCOUNT/CONTAINER/BLOB, gs://BUCKET/OBJECT */
  to: string;
  /** the store, its key in `prefix` (gs: the S3-compatible XML API, path-style) */
  place: Extract<OffsiteTarget, { kind: 's3' | 'azure' }>;
  /** Azure: a VHD goes up as a page blob (what Azure disks are made from), anything else as a block blob */
  pageBlob: boolean;
  /** the object is deleted when the target leaves the YAML (apply --prune) */
  prune: boolean;
  origin: Origin;
}

export interface BackupSpec {
  name: string;
  vm: string;
  disks?: string[];
  schedule: string;
  timezone?: string;
  mode: BackupMode;
  destination?: string;
  /** incremental: a run starts a new full backup once its chain holds this many backups */
  fullEvery: number;
  /** suspended after this many failed runs in a row (undefined: never) */
  maxFailures?: number;
  /** each backup is copied to these once made and verified; retention removes it there too */
  copyTo: OffsiteTarget[];
  /** which backups survive retention (`keep: N` is `{ last: N }`) */
  keep?: KeepPolicy;
  maxAgeSeconds?: number;
  quiesce: boolean;
  hooks: { pre: string[][]; post: string[][]; timeoutSeconds: number };
  /** qemu-img check each copy once made */
  verify: boolean;
  /** re-check (at each run) the copies whose last check is older than this */
  verifyEverySeconds?: number;
  origin: Origin;
}

export type SecretUsage = 'volume' | 'ceph' | 'iscsi' | 'tls' | 'vtpm';

/** A libvirt secret (private, persistent) whose value comes from a file. */
export interface SecretSpec {
  name: string;
  usage: SecretUsage;
  /** what libvirt knows it by: a volume's path (volume), a target IQN (iscsi), a name (ceph, tls, vtpm) */
  usageId: string;
  description?: string;
  /** undefined only for an adopted secret whose value is left as it is */
  valueFile?: string;
  /** how the file holds the value: as is, or base64 (Ceph keys, as `ceph auth get-key` prints them) */
  encoding: 'raw' | 'base64';
  adopt: boolean;
  origin: Origin;
}

/** When disruptive changes may be made: from each time the schedule fires, for durationSeconds. */
export interface MaintenanceWindow {
  schedule: string;
  durationSeconds: number;
  timezone?: string;
  origin: Origin;
}

export interface DesiredState {
  connection?: string;
  files: string[];
  /** the texts it was read from (a saved plan embeds them, as Terraform's plan embeds its configuration) */
  inputs?: { path: string; text: string }[];
  /** the host it is the state of (--host, --label), and the files left out as other hosts' (their hosts: selects none of ours) */
  target?: HostTarget;
  otherHostsFiles?: string[];
  /** some file selects hosts (hosts:): the state directory is then bound to its host (see state-host.ts) */
  targeted?: boolean;
  /** maintenance windows (any file's): disruptive actions wait for one to be open */
  windows?: MaintenanceWindow[];
  pools: Record<string, PoolSpec>;
  images: Record<string, ImageSpec>;
  vms: Record<string, VmSpec>;
  backups: Record<string, BackupSpec>;
  secrets: Record<string, SecretSpec>;
}

/** The path an image's secret is known by (usage volume): its file, or its volume's file in a file pool. */
export function imageSecretUsage(state: Pick<DesiredState, 'pools'>, img: ImageSpec): string | undefined {
  if (img.location.kind === 'path') return img.location.path;
  const pool = state.pools[img.location.pool];
  return pool?.path ? `${pool.path}/${img.location.volume}` : undefined;
}

/** "a dir pool", "an iscsi pool": pool types read as words in messages. */
export function article(word: string): string {
  return /^[aeiou]/i.test(word) ? `an ${word}` : `a ${word}`;
}
