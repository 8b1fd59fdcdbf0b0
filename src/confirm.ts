// Asking a person before a plan that loses data is applied. Only on a terminal: without one,
// the explicit flags (--prune, --allow-replace, or the destroy command itself) are the consent,
// as they always were; --auto-approve gives it on a terminal too.
import { createInterface } from 'node:readline/promises';
import { isDestructive, type Plan } from './reconcile/plan.js';

export const QUESTION = 'Apply these changes? Only "yes" is accepted: ';

/** A plan that deletes or rebuilds anything needs consent. */
export function needsConsent(plan: Plan): boolean {
  return plan.actions.some(isDestructive);
}

/** Whether a person can be asked: stdin and the stream the plan is shown on are a terminal. */
export function canAsk(shownOn: { isTTY?: boolean }): boolean {
  return process.stdin.isTTY === true && shownOn.isTTY === true;
}

/**
 * Asks QUESTION on `output`; true only for the answer "yes". `signal` (SIGTERM, or SIGINT from
 * outside) ends the question with false. Ctrl-C typed at the prompt reaches readline as a key,
 * not as a signal (the terminal is in raw mode), so it is handed to `onCtrlC`.
 */
export async function askYes(output: NodeJS.WritableStream, opts: { signal: AbortSignal; onCtrlC: () => void }): Promise<boolean> {
  const rl = createInterface({ input: process.stdin, output, terminal: true });
  const ctrlC = new AbortController();
  rl.on('SIGINT', () => ctrlC.abort());
  const signal = AbortSignal.any([opts.signal, ctrlC.signal]);
  try {
    const answer = await rl.question(QUESTION, { signal });
    return answer.trim() === 'yes';
  } catch (e) {
    if ((e as Error).name !== 'AbortError') throw e;
    // Ctrl-D ends the question without ending its line; an abort ends the line itself. Either
    // way, what is said next (the signal's message) starts on a line of its own.
    if (!signal.aborted) output.write('\n');
    if (ctrlC.signal.aborted) opts.onCtrlC();
    return false;
  } finally {
    rl.close();
  }
}
