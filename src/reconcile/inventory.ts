// What reconcile created, recorded so that prune deletes only its own objects.
// Stored as JSON in the state directory, written atomically (write-file-atomic); during an
// apply, each change goes first to an append-only journal beside it (InventoryJournal).
import { mkdir, open, readFile, rm, stat } from 'node:fs/promises';
import path from 'node:path';
import writeFileAtomic from 'write-file-atomic';
import { sameIdentity } from '../providers/common/files.js';
import type { StatCache } from '../providers/common/stat-cache.js';
import type { WipeAlgorithm } from './model.js';

export const DEFAULT_STATE_DIR = '/var/lib/virt-reconcile';

export interface ImageRecord {
  type: 'image';
  name: string;
  path: string;
  /** identity at creation: a file someone put in its place later is not ours to delete */
  ino: number;
  birth: string;
  dev: number;
  /** extent files of a multi-file vmdk, recorded at creation: prune deletes these (if still ours), never what the descriptor names now */
  extents: ExtentRecord[];
  createdAt: string;
  /** creation options qemu-img cannot report back (preallocation, vhdx subformat, source) */
  recorded: Record<string, string>;
  /** directories made for it (outermost first): removed with it, if empty by then */
  dirs?: string[];
  /** overwrite it before it is deleted (as declared; kept here, since a pruned image has left the YAML) */
  wipe?: WipeAlgorithm;
  /**
   * A build about to be renamed into place (recorded before the rename): if the file at the
   * path is this one, the build was published and the apply died before recording it.
   */
  pending?: { ino: number; dev: number; birth: string; extents: ExtentRecord[]; recorded: Record<string, string>; createdAt: string };
}

export interface PoolRecord {
  /** the libvirt connection it was made through: it is looked for, and pruned, only there */
  uri?: string;
  type: 'pool';
  name: string;
  uuid?: string;
  /** 'building' from just before the define until the uuid is recorded (absent: older records, ready) */
  status?: 'building' | 'ready';
  createdAt: string;
  /** its target path when it was defined: where its storage is, looked at when it is pruned */
  path?: string;
  /**
   * whether reconcile made its storage (a directory that was not there, a filesystem, VG or
   * label it built) or found it; absent in older records: unknown, so never deleted
   */
  storage?: 'made' | 'found';
  /** a directory it made: its birth time (ns), so that a directory put in its place is not taken for it */
  storageBirth?: string;
  /** declared deleteStorage, kept for when the declaration is gone */
  deleteStorage?: boolean;
  /** fs pools: the filesystem pool-build made on the device (none was there), by its UUID */
  filesystem?: { device: string; type: string; uuid: string };
}

export interface VolumeRecord {
  /** the libvirt connection it was made through: it is looked for, and pruned, only there */
  uri?: string;
  type: 'volume';
  /** the image name in the YAML that declared it */
  name: string;
  pool: string;
  volume: string;
  key: string;
  path: string;
  /** 'building' until the volume is complete: a volume left building is rebuilt */
  status: 'building' | 'ready';
  /** file pools: the file's birth time, checked again before the volume is ever deleted */
  birth?: string;
  /** building, file pools: when the intent was recorded (ns), just before vol-create */
  since?: string;
  /** building: what vol-create was asked for (bytes, libvirt format): a file of another shape is not the one it made */
  making?: { capacity: number; format?: string };
  createdAt: string;
  recorded: Record<string, string>;
  /** wipe it (libvirt's vol-wipe) before it is deleted: as declared, kept for when it has left the YAML */
  wipe?: WipeAlgorithm;
}

export interface DomainRecord {
  /** the libvirt connection it was made through: it is looked for, and pruned, only there */
  uri?: string;
  type: 'domain';
  name: string;
  /** '' while building */
  uuid: string;
  /** 'building' from just before the define until the uuid is recorded (absent: older records, ready) */
  status?: 'building' | 'ready';
  createdAt: string;
  /** its target path when it was defined: where its storage is, looked at when it is pruned */
  path?: string;
  /**
   * whether reconcile made its storage (a directory that was not there, a filesystem, VG or
   * label it built) or found it; absent in older records: unknown, so never deleted
   */
  storage?: 'made' | 'found';
  /** a directory it made: its birth time (ns), so that a directory put in its place is not taken for it */
  storageBirth?: string;
  /** declared deleteStorage, kept for when the declaration is gone */
  deleteStorage?: boolean;
}

export interface SecretRecord {
  /** the libvirt connection it was made through: it is looked for, and pruned, only there */
  uri?: string;
  type: 'secret';
  /** its name in the YAML */
  name: string;
  uuid: string;
  usage: string;
  usageId: string;
  /** 'building' from just before the define until the value is set */
  status: 'building' | 'ready';
  /**
   * A passphrase change re-keying its image, from before the first keyslot change ('started')
   * and once the image opens only with the new passphrase ('keyed') until the secret holds it:
   * an interrupted apply resumes from there (see tools/luks-rekey.ts).
   */
  rekey?: 'started' | 'keyed';
  /** while `rekey` is set: the salted digest of the passphrase the image is being re-keyed to */
  rekeyTo?: string;
  /** "SALT:HEX": sha256 of the salt and the value's sha256, to tell a changed value (never the value, nor its plain digest) */
  valueDigest?: string;
  /** managed by the YAML's adopt: true, not made by reconcile: never undefined */
  adopted?: boolean;
  createdAt: string;
}

/** An image published to object storage (`publish:`): what was uploaded, so prune deletes only that. */
export interface PublishRecord {
  type: 'publish';
  /** the target URL (its key) */
  to: string;
  /** the image it was published from (its YAML name) and that image's path */
  image: string;
  path: string;
  /** the target as declared when it was uploaded (no credentials: a file's path at most) */
  target: import('../providers/publish/ops.js').RecordedTarget;
  /** declared prune: true then: the object goes when the target leaves the YAML */
  prune: boolean;
  /** the digest of what was uploaded (undefined: no upload has completed) */
  sha256?: string;
  /** when that upload completed */
  uploadedAt?: string;
  createdAt?: string;
  /** an upload under way or interrupted: of which digest, and how far it got (a page blob resumes there) */
  upload?: { sha256: string } & import('../publish/place.js').UploadState;
  /** the last upload that failed, for `show` */
  lastError?: { at: string; message: string };
}

export type InventoryRecord = ImageRecord | PoolRecord | VolumeRecord | DomainRecord | SecretRecord | PublishRecord;

/**
 * Is the file at a recorded path still the one reconcile created? Inode numbers are reused
 * as soon as a file is deleted, so the birth time must match too; where the filesystem has
 * none (birth "0"), or the record predates it, the answer is no: nothing is deleted on a guess.
 */
export function sameFile(rec: { ino: number; dev: number; birth?: string }, file: { ino: number; dev: number; birth: string }): boolean {
  return rec.birth !== undefined && rec.birth !== '0' && sameIdentity({ ino: rec.ino, dev: rec.dev, birth: rec.birth }, file);
}

/**
 * Is this volume the one the record describes? The key of a file-pool volume is its path,
 * which any file can take: where the record has the file's birth time, it must match too. A
 * record still building with no key (a kill -9 inside vol-create) proves nothing: the volume
 * under that name may be the half-made one or someone else's, so it is not taken for ours.
 */
export function volumeIsOurs(rec: VolumeRecord, vol: { key: string; birth?: string; capacity?: number; format?: string }): boolean {
  if (rec.key === '') return bornOfIntent(rec, vol);
  if (rec.key !== vol.key) return false;
  return !(rec.birth && rec.birth !== '0' && vol.birth && vol.birth !== rec.birth);
}

/**
 * A kill -9 inside vol-create leaves the intent without the volume's key. In a file pool the
 * key is the path, known beforehand: a file at that path is the one vol-create made only if
 * it was born within moments of the intent — not before it (the intent is saved before
 * vol-create is sent; 100 ms allow for the coarse clock of file timestamps), and at most 10 s
 * after (libvirt creates the file as soon as it runs the create, which a busy daemon may
 * delay) — and has the shape vol-create was asked for: its capacity (within qemu's 512-byte
 * rounding) and its format. A file born at any other time, or of another size or format, is
 * someone else's: one that was there already, or one made after the kill.
 */
function bornOfIntent(rec: VolumeRecord, vol: { key: string; birth?: string; capacity?: number; format?: string }): boolean {
  if (rec.status !== 'building' || !rec.since || !rec.path || vol.key !== rec.path || !vol.birth || vol.birth === '0') return false;
  const m = rec.making;
  if (m && (vol.capacity === undefined || vol.capacity < m.capacity || vol.capacity - m.capacity >= 512 || (m.format && vol.format && m.format !== vol.format))) return false;
  const delta = BigInt(vol.birth) - BigInt(rec.since);
  return delta >= -100_000_000n && delta <= 10_000_000_000n;
}

export interface ExtentRecord {
  path: string;
  ino: number;
  dev: number;
  birth: string;
}

/**
 * Older inventories recorded extents as bare paths: with no identity to check they are
 * never deleted (nothing is deleted on a guess).
 */
export function extentRecords(list: (ExtentRecord | string)[] | undefined): ExtentRecord[] {
  return (list ?? []).map((e) => (typeof e === 'string' ? { path: e, ino: 0, dev: 0, birth: '0' } : e));
}

/** The record as it applies to the file found at its path (a published pending build is ours). */
export function resolveImageRecord(rec: ImageRecord | undefined, file: { ino: number; dev: number; birth: string } | undefined): ImageRecord | undefined {
  if (!rec?.pending || !file || !sameFile(rec.pending, file)) return rec;
  const { pending, ...rest } = rec;
  return { ...rest, ino: pending.ino, dev: pending.dev, birth: pending.birth, extents: pending.extents, recorded: pending.recorded, createdAt: pending.createdAt };
}

/**
 * The record of the image at `p`: under its own key, or — the same file spelled another way
 * (a symlinked directory) — the record whose file it is, by identity.
 */
export function imageRecordFor(inv: Inventory, p: string, file: { ino: number; dev: number; birth: string } | undefined, symlink = false): ImageRecord | undefined {
  const byKey = inv.objects[recordKey({ type: 'image', path: p })];
  if (byKey?.type === 'image') return resolveImageRecord(byKey, file);
  if (!file || symlink) return undefined;
  const byFile = recordsByFile(inv).get(`${file.dev}:${file.ino}:${file.birth}`);
  return byFile && resolveImageRecord(byFile, file);
}

// Image records by identity (device, inode, birth time), built once per inventory: every declared image without a
// record under its own path looks here, and a scan each would be quadratic.
const fileIndexes = new WeakMap<Inventory, Map<string, ImageRecord>>();
function recordsByFile(inv: Inventory): Map<string, ImageRecord> {
  let idx = fileIndexes.get(inv);
  if (!idx) {
    idx = new Map();
    for (const r of Object.values(inv.objects)) if (r.type === 'image' && r.birth !== '0') idx.set(`${r.dev}:${r.ino}:${r.birth}`, r);
    fileIndexes.set(inv, idx);
  }
  return idx;
}

export interface Inventory {
  version: 1;
  objects: Record<string, InventoryRecord>;
  /** the last journal entry this file already holds (see InventoryJournal) */
  journalSeq?: number;
}

/** The one key type of every managed object: what the inventory is keyed by, and prune compares. */
export type ObjectKey =
  | { type: 'image'; path: string }
  | { type: 'pool'; name: string }
  | { type: 'volume'; pool: string; volume: string }
  | { type: 'domain'; name: string }
  | { type: 'secret'; name: string }
  | { type: 'publish'; to: string };

export function recordKey(r: ObjectKey): string {
  switch (r.type) {
    case 'image':
      return `image:${r.path}`;
    case 'pool':
      return `pool:${r.name}`;
    case 'volume':
      return `volume:${r.pool}/${r.volume}`;
    case 'domain':
      return `domain:${r.name}`;
    case 'secret':
      return `secret:${r.name}`;
    case 'publish':
      return `publish:${r.to}`;
  }
}

/**
 * What prune considers: the inventory minus what the YAML declares, one set difference over
 * typed keys (Flux's inventory Diff). Each kind then only confirms the object is still its own.
 */
export function orphans(inv: Inventory, declared: ObjectKey[]): [string, InventoryRecord][] {
  const keep = new Set(declared.map(recordKey));
  return Object.entries(inv.objects)
    .filter(([k]) => !keep.has(k))
    .sort(([a], [b]) => a.localeCompare(b));
}

/** inventory.json, with the changes journaled since it was written (an apply in progress, or killed). */
export async function readInventory(stateDir: string): Promise<Inventory> {
  let data: Inventory;
  try {
    data = JSON.parse(await readFile(path.join(stateDir, 'inventory.json'), 'utf8')) as Inventory;
    if (data.version !== 1 || typeof data.objects !== 'object') throw new Error('unknown inventory version');
  } catch (e) {
    if ((e as NodeJS.ErrnoException).code !== 'ENOENT') throw new Error(`cannot read ${path.join(stateDir, 'inventory.json')}: ${(e as Error).message}`);
    data = { version: 1, objects: {} };
  }
  const file = path.join(stateDir, JOURNAL);
  const journal = await readFile(file, 'utf8').catch(() => '');
  const lines = journal.split('\n');
  for (const [i, line] of lines.entries()) {
    if (!line) continue;
    const entry = journalEntry(line);
    const expected = (data.journalSeq ?? 0) + 1;
    if (entry && entry.seq < expected) continue; // already in inventory.json (killed before the journal was removed)
    if (!entry || entry.seq !== expected) {
      // Only the last line, cut short by a crash (appends end with a newline), is a write that was never acknowledged.
      if (i === lines.length - 1) break;
      throw new Error(
        `${file}: line ${i + 1} is damaged (${entry ? `entry ${entry.seq} where ${expected} was expected` : 'not a journal entry'}); reconcile cannot tell what it made, so it changes nothing. Restore the state directory from a backup, or remove the line if you know what it was`,
      );
    }
    if (entry.record === null) delete data.objects[entry.key];
    else data.objects[entry.key] = entry.record;
    data.journalSeq = entry.seq;
  }
  return data;
}

function journalEntry(line: string): JournalEntry | undefined {
  try {
    const e = JSON.parse(line) as Partial<JournalEntry> | null;
    if (!e || typeof e !== 'object' || !Number.isSafeInteger(e.seq) || typeof e.key !== 'string') return undefined;
    if (e.record !== null && (typeof e.record !== 'object' || typeof (e.record as { type?: unknown }).type !== 'string')) return undefined;
    return e as JournalEntry;
  } catch {
    return undefined;
  }
}

const JOURNAL = 'inventory.journal';

interface JournalEntry {
  seq: number;
  key: string;
  /** null: forgotten */
  record: InventoryRecord | null;
}

/**
 * The inventory's changes during an apply, each durable before the caller goes on (an intent
 * recorded before the object is made), as appended lines rather than rewrites of the whole file:
 * concurrent changes share one append and one fdatasync. readInventory applies them on top of
 * inventory.json; the apply's final rewrite includes them (journalSeq) and empties the journal.
 */
export class InventoryJournal {
  private pending: string[] = [];
  private writing: Promise<void> = Promise.resolve();
  private queued: Promise<void> | undefined;

  constructor(
    private readonly stateDir: string,
    private readonly inv: Inventory,
  ) {}

  /** Applies the change to the inventory in memory and makes it durable. */
  record(key: string, record: InventoryRecord | null): Promise<void> {
    if (record === null) delete this.inv.objects[key];
    else this.inv.objects[key] = record;
    const seq = (this.inv.journalSeq ?? 0) + 1;
    this.inv.journalSeq = seq;
    this.pending.push(JSON.stringify({ seq, key, record } satisfies JournalEntry));
    if (this.queued) return this.queued;
    const queued = this.writing.then(async () => {
      this.queued = undefined;
      const lines = this.pending.splice(0);
      if (lines.length) await this.append(`${lines.join('\n')}\n`);
    });
    this.queued = queued;
    this.writing = queued.catch(() => undefined);
    return queued;
  }

  private created = false;

  private async append(text: string): Promise<void> {
    const file = path.join(this.stateDir, JOURNAL);
    const fh = await open(file, 'a', 0o600);
    try {
      await fh.write(text);
      await fh.datasync();
    } finally {
      await fh.close();
    }
    // A new journal's name must be durable too: the directory is synced once.
    if (!this.created) {
      this.created = true;
      const dir = await open(this.stateDir, 'r');
      await dir.sync().finally(() => dir.close());
    }
  }

  /**
   * Before the first change: a journal a killed apply left (already applied to this inventory by
   * readInventory) is folded into inventory.json first, so that nothing is appended after a line
   * it may have cut short.
   */
  async begin(): Promise<void> {
    if (
      await stat(path.join(this.stateDir, JOURNAL)).then(
        () => true,
        () => false,
      )
    )
      await this.checkpoint();
  }

  /** The whole inventory written (with journalSeq), then the journal emptied. */
  async checkpoint(): Promise<void> {
    await this.writing;
    await writeInventory(this.stateDir, this.inv);
    await rm(path.join(this.stateDir, JOURNAL), { force: true });
  }
}

export async function writeInventory(stateDir: string, inv: Inventory): Promise<void> {
  await mkdir(stateDir, { recursive: true, mode: 0o700 });
  await writeFileAtomic(path.join(stateDir, 'inventory.json'), `${JSON.stringify(inv, null, 2)}\n`, { mode: 0o600, fsync: true });
}

/** Bump when observeImages or parseVolumeXml reads anything differently, so older cached observations are dropped. */
const CACHE_FORMAT = 'observed-v4';

/** The stat-keyed cache of qemu-img observations (see observeImages). */
export class FileObservationCache implements StatCache {
  private entries: Record<string, { sig: string; value: unknown }> = {};
  private dirty = false;
  private constructor(private readonly file: string) {}

  static async open(stateDir: string): Promise<FileObservationCache> {
    const c = new FileObservationCache(path.join(stateDir, 'observed.json'));
    try {
      const data = JSON.parse(await readFile(c.file, 'utf8')) as { format?: string; entries?: typeof c.entries };
      // Observations made by another version may have been read differently: start over.
      c.entries = data.format === CACHE_FORMAT && data.entries ? data.entries : {};
    } catch {
      c.entries = {};
    }
    return c;
  }

  get<T>(p: string, sig: string): T | undefined {
    const e = this.entries[p];
    return e && e.sig === sig ? (e.value as T) : undefined;
  }

  set<T>(p: string, sig: string, value: T): void {
    this.entries[p] = { sig, value };
    this.dirty = true;
  }

  /** Saved only by commands that may write state (apply), never by plan. */
  async save(): Promise<void> {
    if (!this.dirty) return;
    await mkdir(path.dirname(this.file), { recursive: true, mode: 0o700 });
    await writeFileAtomic(this.file, JSON.stringify({ format: CACHE_FORMAT, entries: this.entries }), { mode: 0o600 });
    this.dirty = false;
  }
}
