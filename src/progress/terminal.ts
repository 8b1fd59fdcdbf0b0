// Progress on a terminal: a live line per task under way (cli-progress), redrawn in place on
// standard error and cleared when the task ends, so standard output stays what it was.
import cliProgress from 'cli-progress';
import { describeProgress, humanDuration, type ProgressSink, type ProgressState } from './progress.js';

const WIDTH = 20;

export function terminalProgress(stream: NodeJS.WriteStream = process.stderr): ProgressSink {
  let multi: cliProgress.MultiBar | undefined;
  let active = 0;
  return {
    begin(id, verb, unit = 'bytes') {
      const state: ProgressState = { id, verb, unit, done: 0, startedAt: Date.now() };
      multi ??= new cliProgress.MultiBar({
        stream,
        clearOnComplete: true,
        hideCursor: false,
        fps: 4,
        etaBuffer: 50,
        format: (_o, params, payload: { state: ProgressState }) => {
          const s = payload.state;
          const filled = s.total ? Math.min(WIDTH, Math.floor((s.done / s.total) * WIDTH)) : 0;
          const bar = s.total ? `[${'#'.repeat(filled)}${'-'.repeat(WIDTH - filled)}] ` : '';
          return `${s.verb} ${s.id} ${bar}${describeProgress(s)} [${humanDuration((Date.now() - params.startTime) / 1000)}]`;
        },
      });
      active++;
      const bar = multi.create(100, 0, { state });
      return {
        update(d, t) {
          state.base ??= d;
          state.done = d;
          if (t !== undefined) state.total = t;
          bar.update(state.total ? Math.min(100, (d / state.total) * 100) : 0, { state });
        },
        end() {
          multi?.remove(bar);
          if (--active === 0) {
            multi?.stop();
            multi = undefined;
          }
        },
      };
    },
  };
}
