// The YAML as it is once the JSON Schema (schemas/storage.schema.json) has accepted it: what
// the semantic checks in validate.ts read. Kept beside the schema's shapes; a field added to
// the schema is added here, or validate.ts cannot read it.
import type { CloudInitFiles, DiskSpec, Format, NetworkSource, PoolSpec, PoolType, Qcow2Options, SecretUsage, WipeAlgorithm } from './model.js';

/** Sizes are checked and converted by validate.ts: numbers or strings such as "20G". */
import type { HostSelector } from './hosts.js';

export type SizeInput = number | string;

export interface PermissionsInput {
  owner?: number;
  group?: number;
  /** octal, as a string ("0640") */
  mode?: string;
}

export interface Qcow2Input extends Omit<Qcow2Options, 'clusterSize'> {
  clusterSize?: SizeInput;
}

export interface ImageInput {
  pool?: string;
  path?: string;
  volume?: string;
  format?: Format;
  size?: SizeInput;
  source?: {
    file?: string;
    image?: string;
    backing?: string;
    container?: string;
    directory?: string;
    cloudInit?: CloudInitFiles;
    url?: string;
    sha256?: string;
    checksumUrl?: string;
    auth?: { bearerTokenFile?: string; basicAuthFile?: string };
    bootc?: boolean | { kargs?: string[]; rootSize?: SizeInput };
  };
  rebuild?: 'onChange';
  filesystem?: string;
  qcow2?: Qcow2Input;
  vmdk?: { adapterType?: 'ide' | 'buslogic' | 'lsilogic' | 'legacyESX'; subformat?: string };
  vhd?: { subformat?: 'dynamic' | 'fixed' };
  vhdx?: { subformat?: 'dynamic' | 'fixed' };
  encryption?: { format: 'luks'; passphraseFile: string; previousPassphraseFile?: string; iterTime?: number };
  permissions?: PermissionsInput;
  protect?: boolean;
  wipe?: WipeAlgorithm;
  adopt?: boolean;
  decrypt?: boolean;
  followSymlink?: boolean;
  publish?: { to: string; endpoint?: string; region?: string; credentialsFile?: string; prune?: boolean }[];
}

export interface PoolInput {
  type: PoolType;
  path?: string;
  autostart?: boolean;
  active?: boolean;
  source?: PoolSourceInput;
  permissions?: PermissionsInput;
  /** "90%" */
  capacityAlert?: string;
  adopt?: boolean;
  build?: boolean;
  deleteStorage?: boolean;
}

/** Taken as written: validate.ts checks which fields each pool type takes. */
export type PoolSourceInput = PoolSpec['source'];

export type DiskPolicyInput = Partial<Pick<DiskSpec, 'bus' | 'cache' | 'io' | 'discard' | 'readonly'>>;

export interface DiskInput extends DiskPolicyInput, Partial<Pick<DiskSpec, 'device' | 'serial' | 'wwn' | 'vendor' | 'product'>> {
  image?: string;
  path?: string;
  network?: Omit<NetworkSource, 'format'> & { format?: NetworkSource['format'] };
  target?: string;
}

export interface VmInput {
  create?: { memory: SizeInput; vcpus: number };
  disks?: DiskInput[];
}

export interface BackupInput {
  vm: string;
  disks?: string[];
  schedule: string;
  timezone?: string;
  mode?: 'snapshot' | 'external' | 'copy' | 'incremental';
  destination?: string;
  fullEvery?: number;
  maxFailures?: number;
  copyTo?: (string | { url: string; endpoint?: string; region?: string; pathStyle?: boolean; credentialsFile?: string; identityFile?: string; knownHostsFile?: string })[];
  /** N (the newest N), or restic's rules */
  keep?: number | { last?: number; hourly?: number; daily?: number; weekly?: number; monthly?: number; yearly?: number; within?: string };
  maxAge?: string;
  quiesce?: boolean;
  hooks?: { pre?: string[][]; post?: string[][]; timeout?: string };
  verify?: boolean | { after?: boolean; every?: string };
}

export interface ImageDefaultsInput {
  format?: Format;
  permissions?: PermissionsInput;
  qcow2?: Qcow2Input;
  protect?: boolean;
}

export interface SecretInput {
  usage: SecretUsage;
  volume?: string;
  target?: string;
  name?: string;
  description?: string;
  valueFile?: string;
  encoding?: 'raw' | 'base64';
  adopt?: boolean;
}

export interface FileInput {
  version: 1;
  hosts?: HostSelector[];
  windows?: { schedule: string; duration: string; timezone?: string }[];
  connection?: string;
  defaults?: { disk?: DiskPolicyInput; image?: ImageDefaultsInput };
  pools?: Record<string, PoolInput>;
  images?: Record<string, ImageInput>;
  vms?: Record<string, VmInput>;
  backups?: Record<string, BackupInput>;
  secrets?: Record<string, SecretInput>;
}
