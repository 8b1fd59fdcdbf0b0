// Color in text output, for a person at a terminal only: never in a pipe, a file or a CI log,
// and never with NO_COLOR set (https://no-color.org) or --no-color. picocolors decides by
// itself otherwise, but it also colors when CI is set or --color is anywhere in argv, so the
// decision is made here and picocolors only formats.
import pc from 'picocolors';
import type { Colors } from 'picocolors/types.js';

export type { Colors };

/** Formats nothing: the colors of output that is not for a terminal. */
export const NO_COLORS: Colors = pc.createColors(false);

export function colorEnabled(stream: { isTTY?: boolean }, env: NodeJS.ProcessEnv, flag: boolean): boolean {
  return flag && stream.isTTY === true && !env.NO_COLOR && env.TERM !== 'dumb';
}

/** The colors for text written to `stream`; `flag` is false with --no-color. */
export function colorsFor(stream: { isTTY?: boolean }, flag = true): Colors {
  return pc.createColors(colorEnabled(stream, process.env, flag));
}
