// libvirt's own events, followed as they happen (`virsh event --loop --all` for domains,
// `virsh pool-event --loop --event lifecycle` for pools): the watch service reconciles at once
// when a declared object is undefined, stopped or changed by someone, instead of at the next
// interval. Each stream is started again after it ends (libvirtd restarted), with backoff.
import { setTimeout as sleep } from 'node:timers/promises';
import { streamLines } from './exec.js';

export interface LibvirtEvent {
  kind: 'domain' | 'pool';
  name: string;
  /** the event's type: lifecycle, device-removed, refresh, … */
  event: string;
  /** what virsh says after the name: "Undefined Removed", "Stopped Destroyed", … */
  detail: string;
}

// "[TIMESTAMP: ]event 'lifecycle' for domain 'web': Stopped Destroyed"
// "[TIMESTAMP: ]event 'lifecycle' for storage pool data: Stopped"
const LINE = /event '([^']+)' for (domain|storage pool) '?([^':\s]+)'?(?::\s*(.*))?$/;

export function parseEventLine(line: string): LibvirtEvent | undefined {
  const m = LINE.exec(line.trim());
  if (!m) return undefined;
  return { kind: m[2] === 'domain' ? 'domain' : 'pool', event: m[1]!, name: m[3]!, detail: (m[4] ?? '').trim() };
}

/** Follows both streams until `signal` aborts; `onGap` is told when one ended (events may have been missed). */
export function followEvents(uri: string, onEvent: (e: LibvirtEvent) => void, o: { signal: AbortSignal; onGap: (why: string) => void }): void {
  const streams = [
    ['-c', uri, 'event', '--loop', '--all'],
    ['-c', uri, 'pool-event', '--loop', '--event', 'lifecycle'],
  ];
  for (const args of streams) {
    const loop = async () => {
      for (let attempt = 0; !o.signal.aborted; attempt++) {
        const started = Date.now();
        const r = await streamLines(
          'virsh',
          args,
          (line) => {
            const e = parseEventLine(line);
            if (e) onEvent(e);
          },
          { signal: o.signal },
        ).catch((e: Error) => ({ code: undefined, stderr: e.message }));
        if (o.signal.aborted) return;
        o.onGap(`virsh ${args[2]} ended (${r.stderr.trim().split('\n').pop() || `exit ${r.code}`}); following again`);
        // A stream that ran a while is restarted at once; one that keeps failing, less and less often.
        if (Date.now() - started > 60_000) attempt = 0;
        await sleep(Math.min(30_000, 1000 * 2 ** attempt), undefined, { signal: o.signal }).catch(() => undefined);
      }
    };
    void loop();
  }
}
