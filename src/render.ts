// Text output for people; --output json prints the same values as JSON instead.
import type { ApplyResult } from './reconcile/apply.js';
import type { BackupListing } from './backups/backup.js';
import type { CheckRow } from './checks/check.js';
import type { Action, Plan } from './reconcile/plan.js';
import { countByKind, isDestructive } from './reconcile/plan.js';
import { NO_COLORS, type Colors } from './colors.js';
import { formatSize } from './reconcile/sizes.js';
import { columns, renderTable } from './table.js';
import { printable } from './text.js';

const SIGN: Record<Action['kind'], string> = { create: '+', update: '~', replace: '-/+', delete: '-', 'no-op': ' ' };

/** What a person must notice first: whatever loses data is red, whatever only adds is green. */
function actionColor(a: Action, c: Colors): (s: string) => string {
  if (isDestructive(a)) return c.red;
  if (a.kind === 'create') return c.green;
  if (a.kind === 'update') return c.yellow;
  return (s) => s;
}

/**
 * The per-field changes under an action line, as Terraform prints them: `+ field: value` for a
 * value that is new, `- field: value` for one that goes, `field: from -> to` otherwise.
 */
function changeLines(a: Action, c: Colors): string[] {
  return a.changes.map((ch) => {
    const [field, from, to] = [printable(ch.field), printable(ch.from), printable(ch.to)];
    if (ch.from === '') return `      ${c.green('+')} ${field}: ${to}`;
    if (ch.to === '') return `      ${c.red('-')} ${field}: ${from}`;
    return `      ${field}: ${from} -> ${to}`;
  });
}

export function renderPlan(plan: Plan, opts: { showNoop?: boolean; colors?: Colors } = {}): string {
  const c = opts.colors ?? NO_COLORS;
  const lines: string[] = [];
  const shown = plan.actions.filter((a) => a.kind !== 'no-op' || opts.showNoop);
  const width = Math.max(0, ...shown.map((a) => printable(a.id).length));
  for (const a of shown) {
    const flag = a.destructive ? `   ${c.bold(c.red('[destructive]'))}` : '';
    lines.push(`  ${actionColor(a, c)(`${SIGN[a.kind].padStart(3)} ${printable(a.id).padEnd(width)}  ${a.kind.padEnd(7)}`)}  ${printable(a.reason)}${flag}`);
    lines.push(...changeLines(a, c));
  }
  if (plan.refusals.length) {
    lines.push('', c.red('Refused (nothing will be applied until these are resolved):'));
    for (const r of plan.refusals) lines.push(`  ${c.red(printable(r.id))}: ${printable(r.message)}`);
  }
  const waiting = plan.waiting ?? [];
  if (waiting.length) {
    const opens = waiting[0]!.opensAt;
    lines.push('', c.yellow(`Waiting for a maintenance window${opens ? ` (the next opens at ${opens})` : ' (none opens again)'}:`));
    for (const w of waiting)
      lines.push(
        `  ${c.yellow(`${SIGN[w.kind].padStart(3)} ${printable(w.id)}`)}  ${w.kind}  ${printable(w.because ? `depends on ${w.because.join(', ')}` : w.reason)}${w.destructive ? `   ${c.bold(c.red('[destructive]'))}` : ''}`,
      );
  }
  if (plan.notes.length) {
    lines.push('', 'Notes:');
    for (const n of plan.notes) lines.push(`  ${printable(n)}`);
  }
  const n = countByKind(plan.actions);
  const held = waiting.length ? `; ${waiting.length} waiting for a maintenance window` : '';
  lines.push('');
  if (plan.refusals.length) {
    lines.push(
      c.red(
        `Plan refused: ${refusalCount(plan.refusals)}; ${n.create} to create, ${n.update} to update, ${n.replace} to replace, ${n.delete} to delete, none applied until the refusals are resolved.`,
      ),
    );
  } else if (n.create + n.update + n.replace + n.delete === 0) {
    lines.push(held ? `No changes now${held}; ${n['no-op']} object(s) in sync.` : `No changes. The host matches the desired state (${n['no-op']} object(s) in sync).`);
  } else {
    lines.push(`Plan: ${n.create} to create, ${n.update} to update, ${n.replace} to replace, ${n.delete} to delete; ${n['no-op']} in sync${held}.`);
  }
  return lines.join('\n').replace(/^\n/, '');
}

/** The closing lines of an apply (or a destroy: `verb`). */
export function renderSummary(r: ApplyResult, interrupted?: string, verb: 'apply' | 'destroy' = 'apply'): string {
  const c = r.counts;
  const Verb = verb === 'apply' ? 'Apply' : 'Destroy';
  const body = `${c.created} created, ${c.updated} updated, ${c.replaced} replaced, ${c.deleted} deleted${c.forgotten ? ` (${c.forgotten} more only forgotten: gone, or no longer reconcile's)` : ''}`;
  const lines: string[] = [];
  if (interrupted) lines.push(`${Verb} interrupted by ${interrupted}: ${body}${c.failed ? `, ${c.failed} failed` : ''}.`);
  else lines.push(c.failed ? `${Verb} failed: ${c.failed} action(s) did not complete; ${body}.` : `${Verb} complete: ${body}.`);
  // What did not complete, again at the end: in a long log the first FAILED line scrolls away.
  for (const x of r.results) {
    if (x.status === 'failed') lines.push(`  ${printable(x.id)}: FAILED: ${printable(x.error ?? '')}`);
    else if (x.status === 'skipped') lines.push(`  ${printable(x.id)}: skipped (${printable(x.error ?? '')})`);
  }
  const ids = (s: string) => r.results.filter((x) => x.status === s).map((x) => printable(x.id));
  if (ids('cancelled').length) lines.push(`  cancelled in flight (built again by the next apply): ${ids('cancelled').join(', ')}`);
  if (ids('not-started').length) lines.push(`  not started: ${ids('not-started').join(', ')}`);
  if (interrupted) lines.push(`Run ${verb} again to finish.`);
  return lines.join('\n');
}

/** `backup list`: one line per backup made. */
export function renderBackups(rows: BackupListing[]): string {
  const cols = columns(['ID', 'VM', 'MODE', 'AGE', 'SIZE', 'VERIFIED', 'PROTECTED', 'STATUS'], ['AGE', 'SIZE']);
  return renderTable(
    cols,
    rows.map((r) => [
      r.id,
      r.vm,
      r.mode === 'incremental' ? (r.parent ? 'incremental' : 'incremental (full)') : r.mode,
      age(r.ageSeconds),
      r.status === 'failed' ? '-' : r.size === undefined ? '(in image)' : r.present ? formatSize(r.size) : r.missing === 'base' ? 'BASE MISSING' : 'MISSING',
      r.verified === undefined ? '-' : r.verified ? 'yes' : 'FAILED',
      r.protected ? 'yes' : '-',
      // The whole error is in `-o json`; a table line keeps to its first 80 characters.
      r.status === 'failed' ? `FAILED: ${(r.error ?? '').split('\n')[0]!.slice(0, 80)}` : 'ok',
    ]),
  ).join('\n');
}

function age(seconds: number): string {
  if (seconds < 120) return `${seconds}s`;
  if (seconds < 7200) return `${Math.round(seconds / 60)}m`;
  if (seconds < 172800) return `${Math.round(seconds / 3600)}h`;
  return `${Math.round(seconds / 86400)}d`;
}

/** `check`: one line per declared image checked. */
export function renderCheck(rows: CheckRow[]): string {
  return renderTable(
    columns(['IMAGE', 'RESULT']),
    rows.map((r) => [r.name, `${r.result}${r.inUse ? ' [in use by a running domain]' : ''}`]),
  ).join('\n');
}

/** "2 change(s) cannot be made", "1 warning(s) are errors with --strict", or both. */
function refusalCount(refusals: { id: string }[]): string {
  const strict = refusals.filter((r) => r.id === 'strict').length;
  const changes = refusals.length - strict;
  return [changes ? `${changes} change(s) cannot be made` : '', strict ? `${strict} warning(s) are errors with --strict` : ''].filter(Boolean).join(', ');
}
