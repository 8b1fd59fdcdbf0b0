// What each backup schedule has made: the only backups its retention may ever delete.
// STATE_DIR/backups.json, written atomically.
import { mkdir, readFile } from 'node:fs/promises';
import path from 'node:path';
import writeFileAtomic from 'write-file-atomic';
import type { BackupMode } from '../reconcile/model.js';
import type { Suspensions } from './suspension.js';

export interface BackupFile {
  target: string;
  /** the copy */
  file: string;
  /** the disk image it was taken from (restore writes back here) */
  source: string;
  /** qemu format of the source, restored in the same format */
  sourceFormat: string;
  /** the libvirt pool holding the source, refreshed after a restore */
  pool?: string;
  /** LUKS-encrypted (in qcow2) with the disk's passphrase as it was when the copy was made */
  encrypted?: boolean;
}

export interface BackupRun {
  id: string;
  schedule: string;
  vm: string;
  mode: BackupMode;
  at: string;
  snapshot?: string;
  files: BackupFile[];
  /** incremental: the backup this one holds the changes since (its files back these) */
  parent?: string;
  /** incremental: the libvirt checkpoint made at this backup's instant (the next one copies what changed since) */
  checkpoint?: string;
  /** the domain's definition when it was made (`restore --vm` defines it again) */
  domainXml?: string;
  /** why an incremental schedule took a full backup instead (the chain could not go on) */
  note?: string;
  /** 'failed': the run ended in an error (its partial copies removed); its files are empty */
  status?: 'failed';
  error?: string;
  /** `backup protect`: retention never removes it */
  protected?: boolean;
  /** undefined: not verified (verify off, or an internal snapshot) */
  verified?: boolean;
  verifyError?: string;
  /** when its copies were last checked (verify.every re-checks the ones older than that) */
  verifiedAt?: string;
  /** copies off the host (`copyTo:`), by target URL: when it was complete there, or why it is not (tried again at each run) */
  copies?: Record<string, { at?: string; error?: string }>;
  /** SHA-256 of each file sent off the host, by name: a file fetched back is checked against it */
  sums?: Record<string, string>;
  /** `backup verify NAME --restore`: when it was last restored to a scratch path and compared, and what failed */
  restoreVerifiedAt?: string;
  restoreVerifyError?: string;
}

/** A run under way: what the next run must clean up if this one is killed. */
export interface InProgress {
  id: string;
  vm: string;
  at: string;
  /** where its copies are being written (the schedule's destination may change before the cleanup) */
  destination?: string;
  /** the process running it (one that no longer runs was killed) */
  pid?: number;
  /** the domain was shut off and started paused for it: the id of that instance (only it is ever stopped) */
  startedPaused?: string;
}

export interface BackupRecords {
  version: 1;
  runs: BackupRun[];
  lastSuccess: Record<string, string>;
  lastFailure: Record<string, { at: string; error: string }>;
  /** incremental schedules whose next run must be full, with why (a restore wrote their disks) */
  chainBroken?: Record<string, string>;
  /** schedules suspended after maxFailures failed runs in a row; `digest`: the schedule as it was (a change resumes it) */
  suspended?: Suspensions;
  /** copies off the host that retention removed here but could not remove there yet (tried again at each run) */
  offsiteDeletes?: { schedule: string; url: string; names: string[] }[];
  /**
   * A restore into images under way: each image's copy as it was before (`aside`, complete once
   * it exists under that name). One still here was interrupted: the next restore or backup run
   * puts those images back as they were.
   */
  restoring?: { id: string; vm: string; asides: { source: string; aside: string; pool?: string }[] };
  /** a run under way (cleared when it ends): one found here was interrupted, and is cleaned up before the next */
  inProgress?: Record<string, InProgress>;
}

const FILE = 'backups.json';

export async function readBackupRecords(stateDir: string): Promise<BackupRecords> {
  try {
    return JSON.parse(await readFile(path.join(stateDir, FILE), 'utf8')) as BackupRecords;
  } catch (e) {
    if ((e as NodeJS.ErrnoException).code === 'ENOENT') return { version: 1, runs: [], lastSuccess: {}, lastFailure: {} };
    throw e;
  }
}

export async function writeBackupRecords(stateDir: string, r: BackupRecords): Promise<void> {
  await mkdir(stateDir, { recursive: true, mode: 0o700 });
  await writeFileAtomic(path.join(stateDir, FILE), `${JSON.stringify(r, null, 2)}\n`, { mode: 0o600, fsync: true });
}

/** UTC, sortable, unique to the millisecond: 20261126T145433123Z */
export function stamp(d: Date): string {
  return d.toISOString().replace(/[-:]/g, '').replace('.', '');
}
