// Pure decisions: path spelling, system places, printable text, UTF-8 positions.
import { mkdirSync, mkdtempSync, rmSync, symlinkSync } from 'node:fs';
import { tmpdir } from 'node:os';
import path from 'node:path';
import { afterAll, describe, expect, it } from 'vitest';
import { decodeText, firstInvalidUtf8 } from '../../src/reconcile/load.js';
import { makeResolver, normalizePath, systemPlace, systemPoolPlace } from '../../src/reconcile/paths.js';
import { printable } from '../../src/text.js';

describe('normalizePath', () => {
  const cases: [string, string, string][] = [
    ['double slash', '/srv//x.img', '/srv/x.img'],
    ['dot', '/srv/./x.img', '/srv/x.img'],
    ['dot-dot', '/srv/a/../x.img', '/srv/x.img'],
    ['trailing slash', '/srv/pool/', '/srv/pool'],
    ['root stays root', '/', '/'],
    ['dot-dot above root', '/../etc/x', '/etc/x'],
  ];
  for (const [reason, input, want] of cases) it(reason, () => expect(normalizePath(input)).toBe(want));
});

describe('system places', () => {
  const images: [string, string | undefined][] = [
    ['/etc/shadow', '/etc is a system directory'],
    ['/proc/self/x', '/proc is a system directory'],
    ['/lib64/x', '/lib64 is a system directory'],
    ['/libexec/x', '/libexec is a system directory'],
    ['/usr', '/usr is a system directory'],
    ['/srv/x.img', undefined],
    ['/etcetera/x.img', undefined],
    ['/var/lib/libvirt/images/x.qcow2', undefined],
    ['/home/u/lib/x.img', undefined],
  ];
  for (const [p, want] of images) it(`image at ${p}`, () => expect(systemPlace(p)).toBe(want));
  it('a pool at / is refused; under /srv is fine', () => {
    expect(systemPoolPlace('/')).toBe('/ is the root of the host');
    expect(systemPoolPlace('/srv/pool')).toBeUndefined();
  });
});

describe('makeResolver', () => {
  const dir = mkdtempSync(path.join(tmpdir(), 'vr-unit-paths-'));
  afterAll(() => rmSync(dir, { recursive: true, force: true }));
  mkdirSync(path.join(dir, 'real'));
  symlinkSync(path.join(dir, 'real'), path.join(dir, 'link'));
  const resolve = makeResolver();
  it('resolves a symlinked directory of a file that does not exist yet', () => expect(resolve(`${dir}/link/new.img`)).toBe(`${dir}/real/new.img`));
  it('keeps missing directories as written', () => expect(resolve(`${dir}/link/a/b/../c.img`)).toBe(`${dir}/real/a/c.img`));
});

describe('printable', () => {
  const cases: [string, string, string][] = [
    ['plain text is unchanged', '/srv/x.img', '/srv/x.img'],
    ['newline and tab', 'a\nb\tc', 'a\\nb\\tc'],
    ['terminal escape', '\u001b[31mred', '\\u001b[31mred'],
    ['C1 and DEL', '\u0085\u007f', '\\u0085\\u007f'],
    ['bidi override', 'abc\u202edef', 'abc\\u202edef'],
    ['non-ASCII letters stay', 'café/диск.img', 'café/диск.img'],
  ];
  for (const [reason, input, want] of cases) it(reason, () => expect(printable(input)).toBe(want));
});

describe('UTF-8', () => {
  const cases: [string, number[], number | undefined][] = [
    ['ASCII', [0x61, 0x62], undefined],
    ['valid two-byte', [0xc3, 0xa9], undefined],
    ['latin-1 é', [0x61, 0xe9, 0x62], 1],
    ['truncated sequence', [0xe2, 0x82], 0],
    ['overlong', [0xe0, 0x80, 0x80], 0],
    ['surrogate', [0xed, 0xa0, 0x80], 0],
  ];
  for (const [reason, bytes, want] of cases) it(reason, () => expect(firstInvalidUtf8(Buffer.from(bytes))).toBe(want));
  it('positions: line and column of the bad byte', () => {
    expect(decodeText('f.yaml', Buffer.from('version: 1\nname: caf\xe9\n', 'latin1')).error).toMatchObject({ line: 2, col: 10 });
  });
  it('binary data is named, not echoed', () => {
    expect(decodeText('f.yaml', Buffer.from([0x89, 0x50, 0x00, 0x01])).error?.message).toBe('is binary data, not a YAML text file');
  });
});
