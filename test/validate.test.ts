// Every bad input is reported as FILE:LINE:COL: field: message, all at once, and nothing is touched.
import { existsSync, readdirSync, readFileSync } from 'node:fs';
import { mkdir, symlink } from 'node:fs/promises';
import path from 'node:path';
import { afterAll, describe, expect, it } from 'vitest';
import { parseSize } from '../src/reconcile/sizes.js';
import { cli, ROOT, sandbox, type Sandbox } from './helpers.js';

const BAD = path.join(ROOT, 'test', 'bad');
const expected = JSON.parse(readFileSync(path.join(BAD, 'expected.json'), 'utf8')) as Record<string, string[]>;
const cases = readdirSync(BAD)
  .filter((n) => n !== 'expected.json')
  .sort();

describe.concurrent('bad input corpus', () => {
  it('has at least 40 cases, each with expectations', () => {
    expect(cases.length).toBeGreaterThanOrEqual(40);
    expect(Object.keys(expected).sort()).toEqual(cases);
  });

  it.each(cases)('%s is rejected with positioned errors', async (name) => {
    const r = await cli(['validate', '-f', `test/bad/${name}`]);
    expect(r.code).toBe(1);
    const lines = r.stderr.split('\n').filter((l) => l && !l.includes('nothing was changed'));
    // expected.json holds lines as printed from inside test/bad; here paths start at the repo root.
    expect(lines).toEqual(expected[name]!.map((l) => `test/bad/${l.replace(/ at (?=[^ ]+:\d+:\d+)/, ' at test/bad/').replace(/\((?=[^ ]+:\d+:\d+\))/, '(test/bad/')}`));
    for (const l of lines) expect(l).toMatch(/^test\/bad\/[^:]+:\d+:\d+: /);
  });
});

describe('validation touches nothing', () => {
  let sb: Sandbox;
  afterAll(() => sb?.cleanup());

  it('apply with one bad file creates none of the valid images and writes no state', async () => {
    sb = await sandbox('validate');
    await sb.yaml('version: 1\nimages:\n  good: { path: $DIR/good.qcow2, size: 1M }\n', 'a.yaml');
    await sb.yaml('version: 1\nimages:\n  bad: { path: $DIR/bad.qcow2, size: 1 parsec }\n', 'b.yaml');
    const r = await sb.run('apply', '-f', sb.dir);
    expect(r.code).toBe(1);
    const col = `  bad: { path: ${sb.dir}/bad.qcow2, size: `.length + 1;
    expect(r.stderr).toContain(`b.yaml:3:${col}: images.bad.size: must be`);
    expect(existsSync(path.join(sb.dir, 'good.qcow2'))).toBe(false);
    expect(existsSync(sb.stateDir)).toBe(false);
    expect(await sb.spawned()).toEqual([]);
  });

  it('reports several errors across files in one run, sorted by file and line', async () => {
    const r = await cli(['validate', '-f', 'test/bad/51-many-errors.yaml', '-f', 'test/bad/06-relative-path.yaml']);
    const lines = r.stderr.split('\n').filter((l) => /^test\//.test(l));
    expect(lines.length).toBe(5);
    expect(lines[0]).toMatch(/^test\/bad\/06-/);
    expect(r.stderr).toMatch(/5 error\(s\); nothing was changed/);
  });

  it('--output json lists errors as data', async () => {
    const r = await cli(['validate', '-o', 'json', '-f', 'test/bad/06-relative-path.yaml']);
    const j = JSON.parse(r.stdout) as { valid: boolean; errors: { line: number; col: number; field: string }[] };
    expect(j.valid).toBe(false);
    expect(j.errors[0]).toMatchObject({ line: 4, col: 11, field: 'images.a.path' });
  });
});

describe('sizes', () => {
  it('reads K M G T P and KiB.. as powers of 1024, KB MB GB TB as powers of 1000', () => {
    expect(parseSize('30G')).toBe(30 * 1024 ** 3);
    expect(parseSize('30GiB')).toBe(30 * 1024 ** 3);
    expect(parseSize('30GB')).toBe(30 * 1000 ** 3);
    expect(parseSize('64K')).toBe(65536);
    expect(parseSize('1.5M')).toBe(1572864);
    expect(parseSize(4096)).toBe(4096);
    expect(parseSize('2 TiB')).toBe(2 * 1024 ** 4);
  });

  it('rejects what qemu-img would not read', () => {
    for (const bad of ['30 gigs', '1.5', '-1', '1e9', 'G', '0.3K']) expect(typeof parseSize(bad)).toBe('object');
  });
});

describe('one file, one declaration', () => {
  let sb: Sandbox;
  afterAll(() => sb?.cleanup());

  it('a path through a symlinked directory is the same file; a symlink into /etc is a system directory', async () => {
    sb = await sandbox('aliases');
    await mkdir(path.join(sb.dir, 'real'));
    await symlink(path.join(sb.dir, 'real'), path.join(sb.dir, 'link'));
    await symlink('/etc', path.join(sb.dir, 'etclink'));
    await sb.yaml(`version: 1
images:
  a: { path: $DIR/real/x.img, format: raw, size: 1M }
  b: { path: $DIR/link/x.img, format: qcow2, size: 1M }
  c: { path: $DIR/etclink/shadow, format: raw, size: 1M }
`);
    const r = await sb.run('validate');
    expect(r.code).toBe(1);
    expect(r.stderr).toContain(
      `storage.yaml:4:14: images.b.path: ${sb.dir}/link/x.img is the same file as ${sb.dir}/real/x.img of images.a (${sb.dir}/storage.yaml:3:14): both are ${sb.dir}/real/x.img; a file may be declared once`,
    );
    expect(r.stderr).toContain(`storage.yaml:5:14: images.c.path: ${sb.dir}/etclink/shadow resolves to /etc/shadow, which is refused: /etc is a system directory`);
    expect(await sb.spawned()).toEqual([]);
  });
});

describe('the configuration reference', () => {
  it('names every field of the schema (README "Configuration reference")', () => {
    const schema = JSON.parse(readFileSync(path.join(ROOT, 'schemas', 'storage.schema.json'), 'utf8')) as Record<string, unknown>;
    const readme = readFileSync(path.join(ROOT, 'README.md'), 'utf8');
    const ref = readme.slice(readme.indexOf('## Configuration reference'), readme.indexOf('## How it works'));
    const names = new Set<string>();
    const walk = (node: unknown): void => {
      if (!node || typeof node !== 'object') return;
      const n = node as Record<string, unknown>;
      if (n.properties)
        for (const [k, v] of Object.entries(n.properties as object)) {
          names.add(k);
          walk(v);
        }
      for (const key of ['items', 'additionalProperties', '$defs'])
        if (n[key] && typeof n[key] === 'object') (key === '$defs' ? Object.values(n[key] as object) : [n[key]]).forEach(walk);
      for (const key of ['oneOf', 'anyOf', 'allOf']) if (Array.isArray(n[key])) (n[key] as unknown[]).forEach(walk);
    };
    walk(schema);
    expect(names.size).toBeGreaterThan(40);
    const missing = [...names].filter((k) => !new RegExp(`(^|[^A-Za-z])${k}(:|\\b)`).test(ref));
    expect(missing).toEqual([]);
  });
});

describe('command-line usage', () => {
  it('an option or argument a command does not take is a short usage error, not silently ignored', async () => {
    const cases: [string[], RegExp][] = [
      [['show', 'NAME'], /`show` takes no argument \(got "NAME"\)/],
      [['check', '--repair', 'all'], /`check` takes no argument \(got "all"\); did you mean --repair=all\?/],
      [['validate', '--prune'], /--prune: not an option of `validate`/],
      [['plan', '--from', 'x'], /--from: not an option of `plan`/],
      [['--bogus'], /unknown option --bogus/],
      [['backup'], /`backup` takes run NAME \| list \[NAME\] \| verify NAME/],
    ];
    for (const [argv, want] of cases) {
      const r = await cli(argv);
      expect(r.code, argv.join(' ')).toBe(64);
      expect(r.stderr).toMatch(want);
      // One line, then where the command's own help is.
      expect(r.stderr).toMatch(new RegExp(`^reconcile: [^\\n]+\\nSee \`reconcile ${argv[0]!.startsWith('-') ? '' : `${argv[0]} `}--help\`\\.$`));
      expect(r.stderr).not.toMatch(/^Commands:/m);
    }
  });
});
