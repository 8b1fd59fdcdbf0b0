// Plan text: per-field changes under each action, and colors only when asked for.
import pc from 'picocolors';
import { describe, expect, it } from 'vitest';
import { colorEnabled } from '../../src/colors.js';
import type { Action, Plan } from '../../src/reconcile/plan.js';
import { renderPlan } from '../../src/render.js';

const action = (a: Partial<Action> & Pick<Action, 'id' | 'kind'>): Action => ({
  resource: 'image',
  code: 'new',
  reason: 'r',
  destructive: false,
  changes: [],
  dependsOn: [],
  op: { type: 'none' },
  ...a,
});
const plan = (actions: Action[], refusals: Plan['refusals'] = []): Plan => ({
  formatVersion: 1,
  createdAt: '',
  stateDir: '/s',
  options: { allowReplace: false, prune: false },
  observed: {},
  actions,
  refusals,
  notes: [],
});
const ESC = '\u001b[';

describe('per-field changes', () => {
  const cases: [reason: string, a: Action, lines: string[]][] = [
    ['an update shows from -> to', action({ id: 'images.db', kind: 'update', changes: [{ field: 'size', from: '20 GiB', to: '30 GiB' }] }), ['      size: 20 GiB -> 30 GiB']],
    [
      'a create shows each option it applies with +',
      action({
        id: 'images.a',
        kind: 'create',
        changes: [
          { field: 'format', from: '', to: 'qcow2' },
          { field: 'cluster size', from: '', to: '64 KiB' },
        ],
      }),
      ['      + format: qcow2', '      + cluster size: 64 KiB'],
    ],
    ['a value that goes shows -', action({ id: 'vms.web', kind: 'update', changes: [{ field: 'disk vdb', from: '/srv/x.img', to: '' }] }), ['      - disk vdb: /srv/x.img']],
    ['no changes, no lines', action({ id: 'images.b', kind: 'create' }), []],
    [
      'values from the input are escaped',
      action({ id: 'images.c', kind: 'update', changes: [{ field: 'path', from: 'a\nb', to: '\u001b[2J' }] }),
      ['      path: a\\nb -> \\u001b[2J'],
    ],
  ];
  for (const [reason, a, want] of cases) {
    it(reason, () => {
      const lines = renderPlan(plan([a])).split('\n');
      const at = lines.findIndex((l) => l.includes(a.id));
      expect(lines.slice(at + 1, at + 1 + want.length)).toEqual(want);
      expect(lines[at + 1 + want.length]).toBe('');
    });
  }

  it('keeps the summary line as it was', () => {
    const text = renderPlan(plan([action({ id: 'images.a', kind: 'create', changes: [{ field: 'format', from: '', to: 'qcow2' }] }), action({ id: 'images.b', kind: 'no-op' })]));
    expect(text.split('\n').at(-1)).toBe('Plan: 1 to create, 0 to update, 0 to replace, 0 to delete; 1 in sync.');
  });
});

describe('colors', () => {
  const c = pc.createColors(true);
  const line = (text: string, id: string) => text.split('\n').find((l) => l.includes(id))!;
  const colored = renderPlan(
    plan(
      [
        action({ id: 'images.new', kind: 'create' }),
        action({ id: 'images.grown', kind: 'update' }),
        action({ id: 'images.rebuilt', kind: 'replace', destructive: true }),
        action({ id: 'inventory:/srv/old', kind: 'delete', destructive: true }),
        action({ id: 'pools.p', kind: 'update', destructive: true }),
      ],
      [{ id: 'images.big', message: 'would shrink' }],
    ),
    { colors: c },
  );

  const cases: [reason: string, id: string, color: (s: string) => string][] = [
    ['a create is green', 'images.new', c.green],
    ['an update is yellow', 'images.grown', c.yellow],
    ['a replace is red', 'images.rebuilt', c.red],
    ['a delete is red', 'inventory:/srv/old', c.red],
    ['any destructive action is red, whatever its kind', 'pools.p', c.red],
    ['a refusal is red', 'images.big', c.red],
  ];
  // The line starts in its color (a red [destructive] flag at its end would not do).
  for (const [reason, id, color] of cases) it(reason, () => expect(line(colored, id).startsWith(`  ${color(id).slice(0, color(id).indexOf(id))}`)).toBe(true));

  it('without colors there is no escape sequence, and the text is the same', () => {
    const plain = renderPlan(plan([action({ id: 'inventory:/srv/old', kind: 'delete', destructive: true })]));
    expect(plain).not.toContain(ESC);
    // biome-ignore lint/suspicious/noControlCharactersInRegex: removing terminal color codes
    expect(colored.replace(/\u001b\[\d+m/g, '')).toBe(
      renderPlan(
        plan(
          [
            action({ id: 'images.new', kind: 'create' }),
            action({ id: 'images.grown', kind: 'update' }),
            action({ id: 'images.rebuilt', kind: 'replace', destructive: true }),
            action({ id: 'inventory:/srv/old', kind: 'delete', destructive: true }),
            action({ id: 'pools.p', kind: 'update', destructive: true }),
          ],
          [{ id: 'images.big', message: 'would shrink' }],
        ),
      ),
    );
  });
});

describe('colorEnabled', () => {
  const tty = { isTTY: true };
  const cases: [reason: string, stream: { isTTY?: boolean }, env: NodeJS.ProcessEnv, flag: boolean, want: boolean][] = [
    ['a terminal', tty, { TERM: 'xterm' }, true, true],
    ['a pipe or a file', {}, { TERM: 'xterm' }, true, false],
    ['a pipe, even in CI (picocolors alone would color)', {}, { CI: 'true' }, true, false],
    ['NO_COLOR set', tty, { NO_COLOR: '1' }, true, false],
    ['NO_COLOR empty counts as unset (no-color.org)', tty, { NO_COLOR: '' }, true, true],
    ['--no-color', tty, {}, false, false],
    ['a dumb terminal', tty, { TERM: 'dumb' }, true, false],
  ];
  for (const [reason, stream, env, flag, want] of cases) it(reason, () => expect(colorEnabled(stream, env, flag)).toBe(want));
});
