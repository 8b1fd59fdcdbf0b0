// The watch service's log: JSON lines (pino) for journald, Loki and friends — the default
// when stdout is not a terminal — or timestamped text lines for a person at a terminal.
import pino from 'pino';

export type LogFormat = 'text' | 'json';
type Level = 'info' | 'warn' | 'error';

export interface Logger {
  info(msg: string, fields?: Record<string, unknown>): void;
  warn(msg: string, fields?: Record<string, unknown>): void;
  error(msg: string, fields?: Record<string, unknown>): void;
}

export function defaultLogFormat(): LogFormat {
  return process.stdout.isTTY ? 'text' : 'json';
}

export function createLogger(format: LogFormat): Logger {
  if (format === 'json') {
    // Synchronous: a line logged just before the process exits is not lost.
    const p = pino(
      { base: { pid: process.pid }, timestamp: pino.stdTimeFunctions.isoTime, formatters: { level: (label) => ({ level: label }) } },
      pino.destination({ dest: 1, sync: true }),
    );
    const at = (level: Level) => (msg: string, fields?: Record<string, unknown>) => p[level](fields ?? {}, msg);
    return { info: at('info'), warn: at('warn'), error: at('error') };
  }
  const at = (level: Level) => (msg: string) => process.stdout.write(`${new Date().toISOString()} ${level === 'info' ? '' : `${level.toUpperCase()} `}${msg}\n`);
  return { info: at('info'), warn: at('warn'), error: at('error') };
}
