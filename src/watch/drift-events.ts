// Drift noticed as it happens, not at the next interval: libvirt's events for the declared
// domains and pools, and the disappearance of a declared image file or file-pool volume
// (inotify on their directories; libvirt says nothing when a volume is deleted). Each asks
// the service for a reconcile, a burst of them coalesced into one. Refresh events are left
// out: observation refreshes pools itself, and would otherwise wake the service in a loop.
import path from 'node:path';
import { existsSync, type FSWatcher, watch } from 'node:fs';
import { FILE_POOLS, imageSecretUsage, type DesiredState } from '../reconcile/model.js';
import { followEvents, type LibvirtEvent } from '../tools/libvirt-events.js';
import { refreshPool } from '../tools/libvirt-pool.js';
import { connect, isRemoteUri } from '../tools/virsh.js';

export interface Declared {
  domains: Set<string>;
  pools: Set<string>;
  /** image files and the volume files of file pools */
  files: Set<string>;
  /** a volume file's pool */
  poolOf: Map<string, string>;
}

export function declaredOf(state: DesiredState): Declared {
  const files = new Set<string>();
  const poolOf = new Map<string, string>();
  for (const img of Object.values(state.images)) {
    if (img.location.kind === 'pool' && !FILE_POOLS.includes(state.pools[img.location.pool]?.type as never)) continue;
    const f = imageSecretUsage(state, img);
    if (!f) continue;
    files.add(path.resolve(f));
    if (img.location.kind === 'pool') poolOf.set(path.resolve(f), img.location.pool);
  }
  return { domains: new Set(Object.values(state.vms).map((v) => v.name)), pools: new Set(Object.values(state.pools).map((p) => p.name)), files, poolOf };
}

const COALESCE_MS = 300;

export class DriftEvents {
  private declared: Declared = { domains: new Set(), pools: new Set(), files: new Set(), poolOf: new Map() };
  private uri?: string;
  /** ends the event streams of the connection followed now */
  private streams?: AbortController;
  /** one inotify watch per directory (not per file in it, as a recursive watcher would hold) */
  private watchers: FSWatcher[] = [];
  private dirs = '';
  private pending?: NodeJS.Timeout;
  private reasons: string[] = [];

  constructor(
    private readonly trigger: (reason: string) => void,
    private readonly log: (line: string) => void,
    private readonly signal: AbortSignal,
  ) {}

  /** Follows what this state declares (called after each reconcile; cheap when nothing changed). */
  follow(uri: string, declared: Declared): void {
    if (this.signal.aborted) return;
    this.declared = declared;
    // Streams only for what libvirt would tell of: none for image files alone.
    const wanted = declared.domains.size || declared.pools.size ? uri : undefined;
    if (this.uri !== wanted) {
      this.streams?.abort();
      this.streams = undefined;
      this.uri = wanted;
      if (wanted) {
        const streams = new AbortController();
        this.signal.addEventListener('abort', () => streams.abort(), { once: true });
        this.streams = streams;
        followEvents(wanted, (e) => this.onEvent(e), {
          signal: streams.signal,
          // Events may have been missed (libvirtd restarted): a reconcile looks at everything.
          onGap: (why) => {
            this.log(`libvirt events: ${why}`);
            this.soon('libvirt events were interrupted');
          },
        });
      }
    }
    // A remote connection's files are not on this host: nothing here to watch.
    const dirs = isRemoteUri(uri) ? [] : [...new Set([...declared.files].map((f) => path.dirname(f)))].sort();
    if (dirs.join('\0') === this.dirs) return;
    this.dirs = dirs.join('\0');
    for (const w of this.watchers.splice(0)) w.close();
    for (const dir of dirs) {
      try {
        const w = watch(dir, { persistent: false }, (_event, name) => {
          const p = name ? path.join(dir, name.toString()) : undefined;
          // A rename event is a file made or removed: only the removal of a declared one matters.
          if (p && this.declared.files.has(p) && !existsSync(p)) this.gone(p);
        });
        w.on('error', (e) => this.log(`file events: ${dir}: ${e.message}`));
        this.watchers.push(w);
      } catch (e) {
        // Not there yet (a pool not made): the next reconcile, which makes it, watches it.
        if ((e as NodeJS.ErrnoException).code !== 'ENOENT') this.log(`file events: ${dir}: ${(e as Error).message}`);
        this.dirs = '';
      }
    }
  }

  /** A declared file was deleted: a volume's pool is read again first (libvirt would still list it). */
  private gone(p: string): void {
    const pool = this.declared.poolOf.get(p);
    if (pool && this.uri) void refreshPool(connect(this.uri), pool).catch(() => undefined);
    this.soon(`drift: ${p} was deleted`);
  }

  private onEvent(e: LibvirtEvent): void {
    if (e.event === 'refresh') return;
    const set = e.kind === 'domain' ? this.declared.domains : this.declared.pools;
    if (set.has(e.name)) this.soon(`libvirt event: ${e.kind} ${e.name} ${e.event}${e.detail ? ` (${e.detail})` : ''}`);
  }

  private soon(reason: string): void {
    this.reasons.push(reason);
    clearTimeout(this.pending);
    this.pending = setTimeout(() => {
      const rs = [...new Set(this.reasons)];
      this.reasons = [];
      this.trigger(rs.length > 2 ? `${rs.slice(0, 2).join('; ')} and ${rs.length - 2} more` : rs.join('; '));
    }, COALESCE_MS);
  }

  async stop(): Promise<void> {
    clearTimeout(this.pending);
    this.streams?.abort();
    for (const w of this.watchers.splice(0)) w.close();
  }
}
