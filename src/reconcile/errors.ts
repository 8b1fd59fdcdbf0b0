// Errors are values: each one says where (file:line:col), which field, and what is allowed.
import { printable } from '../text.js';
export interface ConfigError {
  file: string;
  line: number;
  col: number;
  field: string;
  message: string;
}

export function formatConfigError(e: ConfigError): string {
  const field = e.field ? `${e.field}: ` : '';
  return printable(`${e.file}:${e.line}:${e.col}: ${field}${e.message}`);
}

/** Raised when input is invalid; carries every error found so all are reported at once. */
export class ConfigErrors extends Error {
  constructor(readonly errors: ConfigError[]) {
    super(errors.map(formatConfigError).join('\n'));
    this.name = 'ConfigErrors';
  }
}

/** A failure a user can act on, reported without a stack trace. */
export class UserError extends Error {
  /** details: what `-o json` prints besides the message (refusals, the lock holder, ...) */
  constructor(
    message: string,
    readonly exitCode = 1,
    readonly details: Record<string, unknown> = {},
  ) {
    super(message);
    this.name = 'UserError';
  }
}

/** Exit codes are part of the CLI contract (README: "Exit codes"). */
export const EXIT = {
  ok: 0,
  error: 1,
  changes: 2,
  usage: 64,
  /** interrupted by SIGINT (128 + 2) or SIGTERM (128 + 15), as shells report it */
  sigint: 130,
  sigterm: 143,
} as const;
