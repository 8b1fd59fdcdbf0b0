// The command line itself: help per command, one-line usage errors, shell completion, and what
// changes on a terminal (color, and a question before a plan that deletes or replaces).
import { existsSync } from 'node:fs';
import path from 'node:path';
import { execa } from 'execa';
import { describe, expect, it } from 'vitest';
import { cli, cliInTerminal, qemuInfo, ROOT, sandboxes } from './helpers.js';

const box = sandboxes();
const VERSION = (JSON.parse(await import('node:fs/promises').then((fs) => fs.readFile(path.join(ROOT, 'package.json'), 'utf8'))) as { version: string }).version;
const ESC = '\u001b[';
/** Terminal output without its colors. */
// biome-ignore lint/suspicious/noControlCharactersInRegex: removing terminal color codes
const plain = (s: string) => s.replace(/\u001b\[\d+m/g, '');

describe('help', () => {
  it('reconcile --help lists every command', async () => {
    const r = await cli(['--help']);
    expect(r.code).toBe(0);
    for (const c of ['validate', 'plan', 'apply', 'destroy', 'show', 'check', 'backup', 'restore', 'watch', 'completion']) expect(r.stdout).toMatch(new RegExp(`^  ${c}\\b`, 'm'));
  });

  it("a command's --help shows its own options only", async () => {
    const plan = await cli(['plan', '--help']);
    expect(plan.code).toBe(0);
    expect(plan.stdout).toMatch(/^Usage: reconcile plan \[options\]/);
    for (const o of ['--file', '--detailed-exitcode', '--out', '--prune', '--no-color']) expect(plan.stdout).toContain(o);
    for (const o of ['--from', '--interval', '--repair', '--lock-timeout', '--auto-approve']) expect(plan.stdout).not.toContain(o);
    const check = await cli(['check', '--help']);
    expect(check.stdout).toContain('--repair[=all]');
    const run = await cli(['backup', 'run', '--help']);
    expect(run.stdout).toMatch(/^Usage: reconcile backup run \[options\] <NAME>/);
  });

  it('--version prints the version', async () => {
    expect(await cli(['--version'])).toMatchObject({ code: 0, stdout: VERSION });
  });
});

describe('usage errors', () => {
  const cases: [argv: string[], message: RegExp, help: string][] = [
    [[], /^reconcile: missing command \(validate, plan, apply, destroy,/, 'reconcile'],
    [['frobnicate'], /^reconcile: unknown command "frobnicate" \(commands: validate,/, 'reconcile'],
    [['-f', 'x.yaml', 'plan'], /^reconcile: unknown option -f \(options go after the command: `reconcile COMMAND -f`\)/, 'reconcile'],
    [['destroy', '--prune'], /^reconcile: --prune: not an option of `destroy`/, 'reconcile destroy'],
    [['destroy', 'x'], /^reconcile: `destroy` takes no argument \(got "x"\)/, 'reconcile destroy'],
    [['apply', 'a.json', 'b.json'], /^reconcile: `apply` takes \[PLAN\.json\] \(got "a\.json" "b\.json"\)/, 'reconcile apply'],
    [['backup', 'run'], /^reconcile: `backup run` takes NAME: a backup schedule declared under backups:/, 'reconcile backup run'],
    [
      ['backup', 'forget', 'x'],
      /^reconcile: `backup` takes run NAME \| list \[NAME\] \| verify NAME \| resume NAME \| prune NAME \| protect NAME ID \| unprotect NAME ID \(got "forget" "x"\)/,
      'reconcile backup',
    ],
    [['backup', 'protect', 'x'], /^reconcile: `backup protect` takes ID: a backup of the schedule/, 'reconcile backup protect'],
    [['plan', '-f'], /^reconcile: --file needs a value \(PATH\)/, 'reconcile plan'],
    [['plan', '-o', 'yaml'], /^reconcile: --output must be text or json \(got yaml\)/, 'reconcile plan'],
    [['apply', '--lock-timeout', '-1'], /^reconcile: --lock-timeout must be a whole number >= 0 \(got -1\)/, 'reconcile apply'],
    [['check', '--repair=some'], /^reconcile: --repair takes no value \(leaks\) or =all \(got some\)/, 'reconcile check'],
    [['watch', '--interval', '90'], /^reconcile: --interval must be a duration: .* \(got 90\)/, 'reconcile watch'],
    [['watch', '--interval', '30d'], /^reconcile: --interval must be at most 24d20h31m23s \(got 30d\)/, 'reconcile watch'],
    [['completion', 'fish'], /^reconcile: `completion` takes bash or zsh \(got "fish"\)/, 'reconcile completion'],
  ];
  for (const [argv, message, help] of cases) {
    it(`reconcile ${argv.join(' ')}`, async () => {
      const r = await cli(argv);
      expect(r.code).toBe(64);
      expect(r.stderr).toMatch(message);
      expect(r.stderr.split('\n')).toHaveLength(2);
      expect(r.stderr.split('\n')[1]).toBe(`See \`${help} --help\`.`);
      expect(r.stdout).toBe('');
    });
  }
});

describe('a reader that stops early', () => {
  it('`plan -o json | head -c 100`: no stack trace, the exit code of the command itself', async () => {
    const sb = await box('epipe');
    await sb.yaml(`version: 1\nimages:\n${Array.from({ length: 1500 }, (_, i) => `  i${i}: { path: $DIR/i${i}.qcow2, size: 1G }`).join('\n')}\n`);
    const argv = ['node', path.join(ROOT, 'dist', 'cli.js'), 'plan', '-f', path.join(sb.dir, 'storage.yaml'), '--state-dir', sb.stateDir, '-o', 'json'];
    const r = await execa('bash', ['-c', `${argv.map((a) => `'${a}'`).join(' ')} | head -c 100 >/dev/null; echo "rc=\${PIPESTATUS[0]}" >&2`], { reject: false });
    expect(r.stderr).not.toMatch(/EPIPE|node:events|at /);
    expect(r.stderr).toMatch(/rc=0/);
  });
});

describe('completion', () => {
  /** What bash offers after the words typed so far (the last one being completed). */
  const bashOffers = async (...words: string[]) => {
    const script = (await cli(['completion', 'bash'])).stdout;
    const r = await execa('bash', [
      '-c',
      `${script}\nCOMP_WORDS=(${words.map((w) => `'${w}'`).join(' ')}); COMP_CWORD=${words.length - 1}; _reconcile; printf '%s\\n' "\${COMPREPLY[@]}"`,
    ]);
    return String(r.stdout).split('\n').filter(Boolean);
  };

  it("bash: commands, each command's own options, subcommands and option values", async () => {
    expect(await bashOffers('reconcile', '')).toEqual(['validate', 'plan', 'apply', 'destroy', 'show', 'check', 'backup', 'restore', 'watch', 'completion']);
    expect(await bashOffers('reconcile', 'plan', '--d')).toEqual(['--detailed-exitcode']);
    expect(await bashOffers('reconcile', 'destroy', '--')).toEqual([
      '--file',
      '--output',
      '--connect',
      '--state-dir',
      '--host',
      '--label',
      '--parallelism',
      '--lock-timeout',
      '--auto-approve',
      '--no-color',
      '--help',
    ]);
    expect(await bashOffers('reconcile', 'backup', '')).toEqual(['run', 'list', 'verify', 'resume', 'prune', 'protect', 'unprotect']);
    expect(await bashOffers('reconcile', 'backup', 'verify', '--lo')).toEqual(['--lock-timeout']);
    expect(await bashOffers('reconcile', 'check', '--rep')).toEqual(['--repair', '--repair=all']);
    expect(await bashOffers('reconcile', 'show', '-o', '')).toEqual(['text', 'json']);
    expect(await bashOffers('reconcile', 'completion', '')).toEqual(['bash', 'zsh']);
  });

  const zsh = existsSync('/usr/bin/zsh') || existsSync('/bin/zsh');
  it.skipIf(!zsh)('zsh: a script zsh reads, with a function per command', async () => {
    const script = (await cli(['completion', 'zsh'])).stdout;
    await execa('zsh', ['-n'], { input: script });
    expect(script).toMatch(/^#compdef reconcile$/m);
    for (const fn of ['_reconcile_plan', '_reconcile_destroy', '_reconcile_backup_run']) expect(script).toContain(`${fn}() {`);
    expect(script).toContain(`'--detailed-exitcode[exit 0 when there is nothing to do, 2 when there are changes, 1 on error]'`);
  });
});

describe('on a terminal', () => {
  const PLANNED = 'version: 1\nimages:\n  keep: { path: $DIR/keep.qcow2, size: 1M }\n';

  it('plan is colored; not with NO_COLOR, --no-color, or when stdout is not a terminal', async () => {
    const sb = await box('color');
    await sb.yaml(PLANNED);
    const colored = await sb.runInTerminal('', 'plan');
    expect(colored.code, colored.stdout).toBe(0);
    expect(colored.stdout).toContain(`  ${ESC}32m  + images.keep`);
    expect((await sb.runInTerminal('', 'plan', '--no-color')).stdout).not.toContain(ESC);
    expect((await cliInTerminal(['plan', '-f', path.join(sb.dir, 'storage.yaml'), '--state-dir', sb.stateDir], '', { NO_COLOR: '1' })).stdout).not.toContain(ESC);
    expect((await sb.run('plan')).stdout).not.toContain(ESC);
  });

  it('apply asks before a plan that deletes: only "yes" applies it; --auto-approve and a plan without deletes do not ask', async () => {
    const sb = await box('prompt');
    await sb.yaml(`${PLANNED}  gone: { path: $DIR/gone.qcow2, size: 1M }\n`);
    // Only creates: nothing to ask.
    const first = await sb.runInTerminal('', 'apply');
    expect(first.code, first.stdout).toBe(0);
    expect(first.stdout).not.toContain('Apply these changes?');
    const grown = PLANNED.replace('size: 1M', 'size: 2M');
    await sb.yaml(grown);
    const no = await sb.runInTerminal('no\n', 'apply', '--prune');
    expect(no.code, no.stdout).toBe(1);
    expect(plain(no.stdout)).toMatch(/~ images\.keep +update +size 1 MiB -> 2 MiB\n {6}size: 1 MiB -> 2 MiB\n/);
    expect(plain(no.stdout)).toMatch(/- inventory:\S+gone\.qcow2 +delete/);
    expect(no.stdout).toContain('Apply these changes? Only "yes" is accepted:');
    expect(no.stdout).toContain('apply cancelled (the answer was not "yes"); nothing was changed');
    expect(existsSync(path.join(sb.dir, 'gone.qcow2'))).toBe(true);
    expect((await qemuInfo(path.join(sb.dir, 'keep.qcow2')))['virtual-size']).toBe(1024 ** 2);

    const yes = await sb.runInTerminal('yes\n', 'apply', '--prune');
    expect(yes.code, yes.stdout).toBe(0);
    expect(yes.stdout).toContain('Apply complete: 0 created, 1 updated, 0 replaced, 1 deleted.');
    expect(existsSync(path.join(sb.dir, 'gone.qcow2'))).toBe(false);

    await sb.yaml(`${grown}  gone: { path: $DIR/gone.qcow2, size: 1M }\n`);
    expect((await sb.run('apply')).code).toBe(0);
    await sb.yaml(grown);
    const approved = await sb.runInTerminal('', 'apply', '--prune', '--auto-approve');
    expect(approved.code, approved.stdout).toBe(0);
    expect(approved.stdout).not.toContain('Apply these changes?');
    expect(existsSync(path.join(sb.dir, 'gone.qcow2'))).toBe(false);
  });

  it('without a terminal --prune is the consent, and a saved plan was reviewed when it was made', async () => {
    const sb = await box('consent');
    await sb.yaml(`${PLANNED}  gone: { path: $DIR/gone.qcow2, size: 1M }\n`);
    expect((await sb.run('apply')).code).toBe(0);
    await sb.yaml(PLANNED);
    const planFile = path.join(sb.dir, 'plan.json');
    expect((await sb.run('plan', '--prune', '--out', planFile)).code).toBe(0);
    const saved = await sb.runInTerminal('', 'apply', planFile);
    expect(saved.code, saved.stdout).toBe(0);
    expect(saved.stdout).not.toContain('Apply these changes?');
    expect(existsSync(path.join(sb.dir, 'gone.qcow2'))).toBe(false);

    await sb.yaml(`${PLANNED}  gone: { path: $DIR/gone.qcow2, size: 1M }\n`);
    expect((await sb.run('apply')).code).toBe(0);
    await sb.yaml(PLANNED);
    const piped = await sb.run('apply', '--prune');
    expect(piped.code, piped.stderr).toBe(0);
    expect(existsSync(path.join(sb.dir, 'gone.qcow2'))).toBe(false);
  });
});
