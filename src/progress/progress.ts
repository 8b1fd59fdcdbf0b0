// Progress of long work (downloads, decompression, conversion, mkfs, uploads): one interface,
// three ways to show it — a live line per task on a terminal, a line every 10 s elsewhere
// (logs, CI), and a snapshot for the watch service's /status and page. Quiet shows nothing.

/** One long operation: `done` of `total` (bytes; or percent with unit 'percent'); total may be unknown. */
export interface ProgressTask {
  update(done: number, total?: number): void;
  end(): void;
}

export interface ProgressSink {
  /** id: the object ("images.fedora"); verb: what is done to it ("downloading") */
  begin(id: string, verb: string, unit?: 'bytes' | 'percent'): ProgressTask;
}

/** What a task has reached, as /status shows it. */
export interface ProgressState {
  id: string;
  verb: string;
  unit: 'bytes' | 'percent';
  done: number;
  total?: number;
  startedAt: number;
  /** what was done before this run began (a resumed download): not counted in the rate */
  base?: number;
}

export const quietProgress: ProgressSink = { begin: () => ({ update() {}, end() {} }) };

/** Shows every task through each sink. */
export function teeProgress(...sinks: ProgressSink[]): ProgressSink {
  return {
    begin(id, verb, unit) {
      const tasks = sinks.map((s) => s.begin(id, verb, unit));
      return {
        update: (d, t) => {
          for (const x of tasks) x.update(d, t);
        },
        end: () => {
          for (const x of tasks) x.end();
        },
      };
    },
  };
}

const UNITS = ['B', 'KiB', 'MiB', 'GiB', 'TiB'];
export function humanBytes(n: number): string {
  let i = 0;
  while (i < UNITS.length - 1 && n >= 1024 ** (i + 1)) i++;
  return i === 0 ? `${n} B` : `${(n / 1024 ** i).toFixed(1)} ${UNITS[i]}`;
}

export function humanDuration(s: number): string {
  const t = Math.round(s);
  if (t < 60) return `${t}s`;
  if (t < 3600) return `${Math.floor(t / 60)}m${String(t % 60).padStart(2, '0')}s`;
  return `${Math.floor(t / 3600)}h${String(Math.floor((t % 3600) / 60)).padStart(2, '0')}m`;
}

/** "45% (1.2 GiB of 2.6 GiB, 35.0 MiB/s)", "1.2 GiB (35.0 MiB/s)" with no total, "45%" for percent tasks. */
export function describeProgress(p: ProgressState, now = Date.now()): string {
  const pct = p.total ? `${Math.min(100, Math.floor((p.done / p.total) * 100))}%` : undefined;
  if (p.unit === 'percent') return pct ?? 'under way';
  const secs = (now - p.startedAt) / 1000;
  const rate = secs >= 1 ? `, ${humanBytes(Math.round((p.done - (p.base ?? 0)) / secs))}/s` : '';
  return p.total ? `${pct} (${humanBytes(p.done)} of ${humanBytes(p.total)}${rate})` : `${humanBytes(p.done)}${rate ? ` (${rate.slice(2)})` : ''}`;
}

/** Keeps the state of every task under way (the watch service's /status reads it). */
export class ProgressBoard implements ProgressSink {
  private readonly tasks = new Set<ProgressState>();
  begin(id: string, verb: string, unit: 'bytes' | 'percent' = 'bytes'): ProgressTask {
    const s: ProgressState = { id, verb, unit, done: 0, startedAt: Date.now() };
    this.tasks.add(s);
    return {
      update: (d, t) => {
        s.base ??= d;
        s.done = d;
        if (t !== undefined) s.total = t;
      },
      end: () => {
        this.tasks.delete(s);
      },
    };
  }
  snapshot(): ProgressState[] {
    return [...this.tasks].map((t) => ({ ...t }));
  }
}

/**
 * Without a terminal: a line every `everyMs` for each task under way ("still downloading
 * images.fedora: 45% (…) [30s elapsed]"), nothing for work done sooner. Tests shorten the
 * interval with VIRT_RECONCILE_PROGRESS_EVERY_MS.
 */
export function periodicProgress(write: (line: string) => void, everyMs = Number(process.env.VIRT_RECONCILE_PROGRESS_EVERY_MS) || 10_000): ProgressSink {
  const board = new ProgressBoard();
  let timer: NodeJS.Timeout | undefined;
  let active = 0;
  const tick = () => {
    const now = Date.now();
    for (const t of board.snapshot())
      if (now - t.startedAt >= everyMs - 50) write(`still ${t.verb} ${t.id}: ${describeProgress(t, now)} [${humanDuration((now - t.startedAt) / 1000)} elapsed]`);
  };
  return {
    begin(id, verb, unit) {
      const task = board.begin(id, verb, unit);
      if (active++ === 0) {
        timer = setInterval(tick, everyMs);
        timer.unref();
      }
      return {
        update: task.update,
        end: () => {
          task.end();
          if (--active === 0) clearInterval(timer);
        },
      };
    },
  };
}
