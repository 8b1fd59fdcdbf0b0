// The table layout of show, backup list and check.
import { describe, expect, it } from 'vitest';
import { columns, renderTable } from '../../src/table.js';

describe('renderTable', () => {
  it('pads columns to their widest cell, right-aligns the named ones, leaves the last column unpadded', () => {
    const lines = renderTable(columns(['NAME', 'SIZE', 'STATUS'], ['SIZE']), [
      ['a', '512 MiB', 'in-sync'],
      ['longer-name', '2 GiB', 'missing: new image'],
    ]);
    expect(lines).toEqual(['NAME            SIZE  STATUS', 'a            512 MiB  in-sync', 'longer-name    2 GiB  missing: new image']);
  });

  it('escapes control characters before measuring, so a cell cannot break or recolour a line', () => {
    const lines = renderTable(columns(['NAME', 'WHERE']), [['x\n  fake  row', '\u001b[31m/srv/x']]);
    expect(lines).toHaveLength(2);
    expect(lines[1]).toBe('x\\n  fake  row  \\u001b[31m/srv/x');
    expect(lines[0]).toBe('NAME            WHERE');
  });

  it('a row with empty trailing cells has no trailing spaces', () => {
    expect(renderTable(columns(['A', 'B']), [['x', '']])).toEqual(['A  B', 'x']);
  });
});
