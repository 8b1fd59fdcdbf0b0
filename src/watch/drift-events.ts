// Drift noticed as it happens, not at the next interval: libvirt's events for the declared
// domains and pools, and the disappearance of a declared image file or file-pool volume
// (inotify on their directories; libvirt says nothing when a volume is deleted). Each asks
// the service for a reconcile, a burst of them coalesced into one. Refresh events are left
// out: observation refreshes pools itself, and would otherwise wake the service in a loop.
import path from 'node:path';
import { watch as chokidar, type FSWatcher } from 'chokidar';
import { FILE_POOLS, imageSecretUsage, type DesiredState } from '../reconcile/model.js';
import { followEvents, type LibvirtEvent } from '../tools/libvirt-events.js';

export interface Declared {
  domains: Set<string>;
  pools: Set<string>;
  /** image files and the volume files of file pools */
  files: Set<string>;
}

export function declaredOf(state: DesiredState): Declared {
  const files = new Set<string>();
  for (const img of Object.values(state.images)) {
    if (img.location.kind === 'pool' && !FILE_POOLS.includes(state.pools[img.location.pool]?.type as never)) continue;
    const f = imageSecretUsage(state, img);
    if (f) files.add(path.resolve(f));
  }
  return { domains: new Set(Object.values(state.vms).map((v) => v.name)), pools: new Set(Object.values(state.pools).map((p) => p.name)), files };
}

const COALESCE_MS = 300;

export class DriftEvents {
  private declared: Declared = { domains: new Set(), pools: new Set(), files: new Set() };
  private uri?: string;
  private files?: FSWatcher;
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
    if (this.uri !== uri) {
      // A new connection (the YAML's changed): the old streams end with the service only.
      this.uri = uri;
      followEvents(uri, (e) => this.onEvent(e), { signal: this.signal, onGap: (why) => this.log(`libvirt events: ${why}`) });
    }
    const dirs = [...new Set([...declared.files].map((f) => path.dirname(f)))].sort();
    if (dirs.join('\0') === this.dirs) return;
    this.dirs = dirs.join('\0');
    void this.files?.close();
    this.files = undefined;
    if (!dirs.length) return;
    const w = chokidar(dirs, { depth: 0, ignoreInitial: true });
    w.on('unlink', (p) => {
      if (this.declared.files.has(path.resolve(p))) this.soon(`drift: ${p} was deleted`);
    });
    w.on('error', (e) => this.log(`file events: ${(e as Error).message}`));
    this.files = w;
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
    await this.files?.close();
  }
}
