// The one table layout of text output (`show`, `backup list`, `check`): a header row, columns
// two spaces apart and as wide as their widest cell, numbers right-aligned so their units line
// up. Every cell is printed through printable(): names and paths come from the input.
import { printable } from './text.js';

export interface Column {
  title: string;
  /** right: sizes, counts and ages, so that their digits line up */
  align?: 'left' | 'right';
}

/** Lines of the table; a last left-aligned column is not padded (it holds free text). */
export function renderTable(columns: Column[], rows: string[][]): string[] {
  const cells = [columns.map((c) => c.title), ...rows].map((r) => columns.map((_, i) => printable(r[i] ?? '')));
  const widths = columns.map((_, i) => Math.max(...cells.map((r) => r[i]!.length)));
  return cells.map((r) =>
    r
      .map((cell, i) => {
        if (columns[i]!.align === 'right') return cell.padStart(widths[i]!);
        return i === columns.length - 1 ? cell : cell.padEnd(widths[i]!);
      })
      .join('  ')
      .trimEnd(),
  );
}

/** Columns from titles; the ones named in `right` are right-aligned. */
export function columns(titles: string[], right: string[] = []): Column[] {
  return titles.map((title) => ({ title, align: right.includes(title) ? 'right' : 'left' }));
}
