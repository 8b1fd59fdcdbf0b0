#!/usr/bin/env node
// The `reconcile` command line: its commands and options (commander), their help, usage errors
// in one line, exit codes. What each command does is in commands.ts, imported only when one
// runs, so that --help, --version and completion answer at once.
import path from 'node:path';
import { readFileSync, writeFileSync } from 'node:fs';
import { Command, CommanderError, Help, Option } from 'commander';
import type { Args } from './commands.js';
import { completionScript, type CommandSpec, type ValueSpec } from './completion.js';
import { DURATION_HELP, formatDuration, parseDuration, TIMER_MAX_SECONDS } from './reconcile/durations.js';
import { ConfigErrors, EXIT, UserError } from './reconcile/errors.js';
import { DEFAULT_STATE_DIR } from './reconcile/inventory.js';
import { hostTarget } from './reconcile/hosts.js';
import { displayGitUrl, gitUrlProblem } from './tools/git.js';

const VERSION = (JSON.parse(readFileSync(new URL('../package.json', import.meta.url), 'utf8')) as { version: string }).version;

// A reader that stops early (`plan -o json | head`) closes the pipe: the rest of the output
// has nowhere to go and is dropped, and the command itself goes on to its end — an apply is
// never cut short by its output going away — and exits with its own code.
for (const stream of [process.stdout, process.stderr]) {
  stream.on('error', (e: NodeJS.ErrnoException) => {
    if (e.code !== 'EPIPE') throw e;
  });
}

// For `npm run bench`: this process's peak memory and CPU time, written as it exits
// (Node cannot ask for a child's resource usage, so the child says it).
const rusageFile = process.env.VIRT_RECONCILE_RUSAGE;
if (rusageFile) {
  process.on('exit', () => {
    const u = process.resourceUsage();
    writeFileSync(rusageFile, JSON.stringify({ maxRssKiB: u.maxRSS, cpuSeconds: (u.userCPUTime + u.systemCPUTime) / 1e6 }));
  });
}

/** A usage error, said in one line, with the command whose --help explains. */
class UsageError extends UserError {
  constructor(
    message: string,
    readonly command: Command,
  ) {
    super(message, EXIT.usage);
  }
}

/** "backup run" for `reconcile backup run`; "" for `reconcile` itself. */
function pathOf(cmd: Command): string {
  const names: string[] = [];
  for (let c: Command | null = cmd; c?.parent; c = c.parent) names.unshift(c.name());
  return names.join(' ');
}

const quoted = (args: readonly string[]) => args.map((x) => JSON.stringify(x)).join(' ');

/** A command's arguments as its usage writes them: "run NAME", "list [NAME]". */
function synopsis(cmd: Command): string {
  return [cmd.name(), ...cmd.registeredArguments.map((x) => (x.required ? x.name() : `[${x.name()}]`))].join(' ');
}

/** The options a command takes, for "not an option of" messages. */
function optionList(cmd: Command): string {
  return cmd.options.map((o) => o.long).join(', ');
}

// `--repair` alone repairs leaks and `--repair=all` everything; `--repair all` is a mistake the
// parser must not read as `--repair=all` (it once ran a leaks-only repair and ignored "all").
// So a bare `--repair` becomes `--repair=leaks` before parsing, and the value is never taken
// from the next word.
const REPAIR_TERM = '--repair[=all]';

/**
 * commander's parser, with the messages of this command line: each of these methods is called
 * where commander knows exactly what is wrong (the flag, the argument), and says it in one line.
 */
class Cli extends Command {
  override createCommand(name?: string): Cli {
    return new Cli(name);
  }

  override createHelp(): Help {
    return Object.assign(new CliHelp(), this.configureHelp());
  }

  unknownOption(flag: string): never {
    const path = pathOf(this);
    if (this.commands.length) throw new UsageError(`unknown option ${flag} (options go after the command: \`reconcile ${path ? `${path} ` : ''}COMMAND ${flag}\`)`, this);
    throw new UsageError(`${flag}: not an option of \`${path}\` (it takes: ${optionList(this)})`, this);
  }

  missingArgument(name: string): never {
    const arg = this.registeredArguments.find((x) => x.name() === name);
    throw new UsageError(`\`${pathOf(this)}\` takes ${name}${arg?.description ? `: ${arg.description}` : ''}`, this);
  }

  optionMissingArgument(option: Option): never {
    throw new UsageError(`${option.long} needs a value (${option.flags.replace(/^.*[<[]|[>\]]$/g, '')})`, this);
  }
}

class CliHelp extends Help {
  override optionTerm(option: Option): string {
    return option.long === '--repair' ? REPAIR_TERM : super.optionTerm(option);
  }
}

const DEFAULTS = { output: 'text', parallelism: '4', lockTimeout: '300', interval: '1m', ref: 'main', path: '.', listen: '127.0.0.1:9477' };

/** A default shown as written (commander would quote it). */
const withDefault = (o: Option, value: string) => o.default(value, value);

const collect = (value: string, previous: string[] | undefined) => [...(previous ?? []), value];
const abs = (p: string | undefined) => (p === undefined ? undefined : path.resolve(p));

/** -f, -o, --connect, --state-dir: every command that reads the YAML takes them. */
function readsYaml(cmd: Command): Command {
  return cmd
    .option('-f, --file <PATH>', 'YAML file or directory; repeatable (default: ./storage.yaml)', collect)
    .addOption(withDefault(new Option('-o, --output <FORMAT>', 'text or json'), DEFAULTS.output))
    .option('--connect <URI>', "libvirt URI (default: the YAML's connection, LIBVIRT_DEFAULT_URI, qemu:///system)")
    .addOption(new Option('--state-dir <DIR>', 'where the inventory, observation cache and lock live').env('VIRT_RECONCILE_STATE_DIR').default(DEFAULT_STATE_DIR))
    .option('--host <NAME>', "the host this run is for: files whose hosts: selects another are left out (default: this machine's name)")
    .option('--label <KEY=VALUE>', "a label of the host, for files' hosts: [{ label: KEY=VALUE }]; repeatable", collect);
}

const option = {
  allowReplace: () => new Option('--allow-replace', 'allow rebuilding images whose format, options or source changed (their data is lost)'),
  prune: () => new Option('--prune', 'delete objects reconcile created that left the YAML'),
  strict: () => new Option('--strict', 'treat warnings as errors (a passphraseFile or secret valueFile that group or others can read)'),
  parallelism: () => withDefault(new Option('--parallelism <N>', 'independent actions at once'), DEFAULTS.parallelism),
  lockTimeout: () => withDefault(new Option('--lock-timeout <SECS>', 'how long to wait for another apply on the same state directory (0: fail at once)'), DEFAULTS.lockTimeout),
  autoApprove: () => new Option('--auto-approve', 'on a terminal, apply a plan that deletes or replaces without asking'),
  quiet: () => new Option('--quiet', 'no progress of long work (downloads, conversions, mkfs): neither the live line on a terminal nor the lines every 10 s'),
  noColor: () => new Option('--no-color', 'no color on a terminal either (NO_COLOR=1 does the same)'),
  outsideWindow: () => new Option('--outside-window', 'make now what waits for a maintenance window (windows: in the YAML): replaces, prunes, changes needing a restart'),
};

type CommandName = Exclude<keyof typeof import('./commands.js'), 'Args'>;

/** What the parse led to: the command run (for the --help pointer of an error), its options, its exit code. */
interface Run {
  command?: Command;
  args?: Args;
  code: number;
}

function program(run: Run): Command {
  const cli = new Cli('reconcile')
    .description('Declarative VM storage: libvirt pools, disk images, disk policies and backups from YAML.')
    .version(VERSION, '--version', 'print the version')
    .helpCommand('help [COMMAND]', 'show the help of a command')
    .allowExcessArguments()
    .exitOverride()
    .configureOutput({ outputError: () => {} })
    .addHelpText(
      'after',
      `
Exit codes: 0 success, 1 error or refused change, 2 changes present
(plan --detailed-exitcode), 64 usage error, 130/143 apply or destroy interrupted (SIGINT/SIGTERM).`,
    );
  const whileStarting = () => undefined;
  const action = (cmd: Command, name: CommandName) =>
    cmd.action(async (...params: unknown[]) => {
      const self = params[params.length - 1] as Command;
      run.args = toArgs(self);
      // watch takes SIGHUP as "reconcile now". One that arrives while the service is still
      // starting must not end it (a signal's default action): the reconcile it starts with
      // does what was asked. cmdWatch installs the real handler.
      if (name === 'cmdWatch') process.on('SIGHUP', whileStarting);
      const commands = await import('./commands.js');
      run.code = await commands[name](run.args);
    });
  // A command's own words are checked here, once for all: extra ones are an error, never ignored.
  cli.hook('preAction', (_root, self) => {
    run.command = self;
    const max = self.registeredArguments.length;
    if (self.commands.length || self.args.length <= max) return;
    const hint = pathOf(self) === 'check' && self.args[0] === 'all' ? '; did you mean --repair=all?' : '';
    throw new UsageError(
      max === 0
        ? `\`${pathOf(self)}\` takes no argument (got ${quoted(self.args)})${hint}`
        : `\`${pathOf(self)}\` takes ${synopsis(self).split(' ').slice(1).join(' ')} (got ${quoted(self.args)})`,
      self,
    );
  });
  // No command, or one that is not: commander would print the whole help.
  cli.action(() => {
    const names = cli.commands.map((c) => c.name()).join(', ');
    throw new UsageError(cli.args.length ? `unknown command ${JSON.stringify(cli.args[0])} (commands: ${names})` : `missing command (${names})`, cli);
  });

  action(
    readsYaml(cli.command('validate').description('check the YAML (schema, references, units); touches nothing'))
      .option('--all-hosts <HOSTS_FILE>', "check every host's desired state: HOSTS_FILE lists the hosts (a name, or { name, labels: { KEY: VALUE } })")
      .addOption(option.strict()),
    'cmdValidate',
  );
  action(
    readsYaml(cli.command('plan').description('show what apply would change'))
      .addOption(option.allowReplace())
      .addOption(option.prune())
      .addOption(option.strict())
      .option('--detailed-exitcode', 'exit 0 when there is nothing to do, 2 when there are changes, 1 on error')
      .addOption(option.outsideWindow())
      .option('--out <FILE>', 'also save the plan as JSON, for `apply FILE`')
      .addOption(option.noColor()),
    'cmdPlan',
  );
  action(
    readsYaml(cli.command('apply').description('make the host match the YAML, or execute a saved plan exactly'))
      .argument('[PLAN.json]', 'a plan saved by `plan --out` (then no -f: the plan embeds its YAML)')
      .addOption(option.allowReplace())
      .addOption(option.prune())
      .addOption(option.strict())
      .addOption(option.parallelism())
      .addOption(option.lockTimeout())
      .addOption(option.outsideWindow())
      .addOption(option.autoApprove())
      .addOption(option.quiet())
      .addOption(option.noColor()),
    'cmdApply',
  );
  action(
    readsYaml(cli.command('destroy').description('delete everything reconcile created (the inventory of the state directory), with the guards of --prune'))
      .addOption(option.parallelism())
      .addOption(option.lockTimeout())
      .addOption(option.autoApprove())
      .addOption(option.noColor()),
    'cmdDestroy',
  );
  action(readsYaml(cli.command('show').description('list declared objects, what exists, and whether it is in sync')), 'cmdShow');
  action(
    readsYaml(cli.command('check').description('qemu-img check of every declared image (leaks, corruptions)'))
      .addOption(new Option('--repair [scope]', 'repair leaked clusters (=all: also corruptions) of images no running domain uses'))
      .addOption(option.parallelism()),
    'cmdCheck',
  );

  const backup = cli.command('backup').description('take, list and verify backups of the schedules under backups:');
  const schedule = ['NAME', 'a backup schedule declared under backups:'] as const;
  /** `backup VERB NAME`: a subcommand on one schedule (its own options follow, then --lock-timeout). */
  const onSchedule = (verb: string, what: string) => readsYaml(backup.command(verb).description(what)).argument(...schedule);
  action(onSchedule('run', 'take one backup of schedule NAME now (hooks, verify, retention)').addOption(option.lockTimeout()), 'cmdBackupRun');
  action(
    readsYaml(backup.command('list').description('backups made and failed runs: id, vm, mode, age, size, verified, protected, status')).argument(`[${schedule[0]}]`, schedule[1]),
    'cmdBackupList',
  );
  action(
    onSchedule('verify', 'qemu-img check every copy of schedule NAME again (--restore: restore the newest to a scratch path and compare)')
      .option('--restore', 'also restore the newest backup to a scratch path beside the copies, compare it and check it, then remove it')
      .addOption(option.lockTimeout()),
    'cmdBackupVerify',
  );
  action(onSchedule('resume', 'schedule NAME runs on its cron again after it was suspended (maxFailures)').addOption(option.lockTimeout()), 'cmdBackupResume');
  action(
    onSchedule('prune', "apply schedule NAME's retention (keep, maxAge) now; --dry-run: say what would go and what keeps the rest")
      .option('--dry-run', 'change nothing: list each backup as kept (by which rules) or removed (why)')
      .addOption(option.lockTimeout()),
    'cmdBackupPrune',
  );
  for (const [verb, what] of [
    ['protect', 'retention never removes backup ID of schedule NAME'],
    ['unprotect', 'retention may remove backup ID of schedule NAME again'],
  ] as const)
    action(
      onSchedule(verb, what).argument('ID', 'a backup of the schedule (see `backup list`)').addOption(option.lockTimeout()),
      verb === 'protect' ? 'cmdBackupProtect' : 'cmdBackupUnprotect',
    );
  backup.action(() => {
    const got = backup.args.length ? ` (got ${quoted(backup.args)})` : '';
    throw new UsageError(`\`backup\` takes ${backup.commands.map(synopsis).join(' | ')}${got}`, backup);
  });

  action(
    readsYaml(cli.command('restore').description('revert to an internal snapshot, or write a copy back (into the VM, or to a new path)'))
      .argument(...schedule)
      .option('--from <ID>', 'the backup to restore (see `backup list`)')
      .option('--passphrase-file <FILE>', "an encrypted backup made before its disk's passphrase changed: the passphrase it was made with")
      .option('--vm', 'the domain is gone: define it again from the backup, then restore its disks')
      .option('--to <PATH>', 'write the disks to a new file (a directory for several disks) for inspection; the VM is not touched')
      .option('--start', 'start the domain once its disks are restored')
      .addOption(option.outsideWindow())
      .addOption(option.lockTimeout()),
    'cmdRestore',
  );
  action(
    readsYaml(
      cli.command('watch').description('run as a service: re-apply on every interval, file change or git push, heal drift, run backup schedules, serve /metrics and /status'),
    )
      .addOption(option.allowReplace())
      .addOption(option.prune())
      .addOption(option.parallelism())
      .addOption(withDefault(new Option('--interval <DURATION>', `reconcile period: ${DURATION_HELP.replace(/^a duration: /, '')}`), DEFAULTS.interval))
      .option('--git <URL>', 'read the YAML from this git repository instead of -f')
      .addOption(withDefault(new Option('--ref <REF>', 'git branch, tag or commit'), DEFAULTS.ref))
      .addOption(withDefault(new Option('--path <SUBDIR>', 'directory of the git repository holding the YAML'), DEFAULTS.path))
      .addOption(withDefault(new Option('--listen <HOST:PORT>', 'HTTP address'), DEFAULTS.listen))
      .option('--git-ssh-key <FILE>', 'a private key (a deploy key) for an SSH repository URL; only it is offered')
      .option('--known-hosts <FILE>', "the SSH host keys accepted (default: ssh's known_hosts); an unknown or changed host key is refused")
      .option('--git-token-file <FILE>', "a file holding an HTTPS token, sent as basic auth's password to the repository's origin only")
      .option('--git-username <NAME>', 'the user name sent with --git-token-file (default: x-access-token)')
      .option('--verify-commits <KEYS_FILE>', 'apply only commits signed by one of these keys (OpenSSH public keys or GPG public keys); others are rejected')
      .option('--notify <URL>', 'POST events (applied, rejected, failed, recovered, drift, backups) to this webhook; slack+URL for Slack; repeatable', collect)
      .option('--notify-file <FILE>', 'webhooks to post to, one URL per line (as --notify), kept out of the process arguments (a Slack webhook URL is a secret)')
      .option('--notify-secret-file <FILE>', 'sign --notify posts: X-Virt-Reconcile-Signature-256, HMAC-SHA256 with this secret')
      .option('--webhook-secret-file <FILE>', 'enables POST /hooks/git, HMAC-SHA256 signed with this secret')
      .option('--suspend', 'start suspended (serve status, change nothing)')
      .option('--log-format <FORMAT>', 'text or json (default: json when stdout is not a terminal)'),
    'cmdWatch',
  );

  cli
    .command('completion')
    .description('print a bash or zsh completion script')
    .argument('<SHELL>', 'bash or zsh')
    .addHelpText('after', '\nbash: source <(reconcile completion bash)\nzsh:  source <(reconcile completion zsh)')
    .action((shell: string, _opts: unknown, self: Command) => {
      if (shell !== 'bash' && shell !== 'zsh') throw new UsageError(`\`completion\` takes bash or zsh (got ${JSON.stringify(shell)})`, self);
      process.stdout.write(completionScript(shell, specOf(cli)));
    });
  return cli;
}

interface Opts {
  file?: string[];
  allHosts?: string;
  host?: string;
  label?: string[];
  output: string;
  connect?: string;
  stateDir: string;
  allowReplace?: boolean;
  prune?: boolean;
  parallelism?: string;
  lockTimeout?: string;
  detailedExitcode?: boolean;
  autoApprove?: boolean;
  quiet?: boolean;
  color?: boolean;
  out?: string;
  repair?: string | true;
  from?: string;
  strict?: boolean;
  passphraseFile?: string;
  dryRun?: boolean;
  vm?: boolean;
  to?: string;
  restore?: boolean;
  start?: boolean;
  outsideWindow?: boolean;
  interval?: string;
  git?: string;
  ref?: string;
  path?: string;
  listen?: string;
  webhookSecretFile?: string;
  gitSshKey?: string;
  knownHosts?: string;
  gitTokenFile?: string;
  gitUsername?: string;
  verifyCommits?: string;
  notify?: string[];
  notifyFile?: string;
  notifySecretFile?: string;
  suspend?: boolean;
  logFormat?: string;
}

/** The command's options as the commands take them; a bad value is a usage error of that command. */
function toArgs(cmd: Command): Args {
  const o = cmd.opts<Opts>();
  const bad = (message: string) => new UsageError(message, cmd);
  const int = (name: string, v: string, min: number) => {
    if (!/^\d+$/.test(v) || Number(v) < min) throw bad(`--${name} must be a whole number >= ${min} (got ${v})`);
    return Number(v);
  };
  const oneOf = <T extends string>(name: string, v: string, allowed: readonly T[]): T => {
    if (!(allowed as readonly string[]).includes(v)) throw bad(`--${name} must be ${allowed.join(' or ')} (got ${v})`);
    return v as T;
  };
  const interval = (v: string) => {
    const seconds = parseDuration(v);
    if (typeof seconds !== 'number') throw bad(`--interval must be ${DURATION_HELP} (got ${v})`);
    // The interval is a timer: one longer than a timer can wait would fire at once, in a loop.
    if (seconds > TIMER_MAX_SECONDS) throw bad(`--interval must be at most ${formatDuration(TIMER_MAX_SECONDS)} (got ${v})`);
    return seconds;
  };
  const repair = o.repair === undefined ? undefined : o.repair === 'leaks' || o.repair === 'all' ? o.repair : undefined;
  if (o.repair !== undefined && !repair) throw bad(`--repair takes no value (leaks) or =all (got ${o.repair})`);
  const target = hostTarget(o.host, o.label);
  if ('error' in target) throw bad(target.error);
  if (o.path !== undefined && (path.isAbsolute(o.path) || o.path.split(/[\\/]/).includes('..')))
    throw bad(`--path must be a directory inside the repository, without .. (got ${JSON.stringify(o.path)})`);
  const gitOnly = (['gitSshKey', 'knownHosts', 'gitTokenFile', 'gitUsername', 'verifyCommits'] as const).filter((k) => o[k] !== undefined);
  if (o.notifySecretFile !== undefined && !o.notify?.length && o.notifyFile === undefined) throw bad('--notify-secret-file goes with --notify or --notify-file');
  if (!o.git && gitOnly.length) throw bad(`--${gitOnly[0]!.replace(/[A-Z]/g, (c) => `-${c.toLowerCase()}`)} goes with --git`);
  if (o.git) {
    const problem = gitUrlProblem(o.git);
    if (problem) throw bad(`--git ${displayGitUrl(o.git)} ${problem}`);
  }
  if (o.allHosts !== undefined && (o.host !== undefined || o.label?.length)) throw bad('--all-hosts checks the hosts its file lists; --host and --label are for one host');
  return {
    rest: cmd.args,
    files: o.file?.length ? o.file : ['./storage.yaml'],
    filesGiven: !!o.file?.length,
    target,
    targetGiven: o.host !== undefined || !!o.label?.length,
    allHosts: o.allHosts,
    outsideWindow: o.outsideWindow ?? false,
    output: oneOf('output', o.output ?? DEFAULTS.output, ['text', 'json'] as const),
    connect: o.connect,
    // Absolute: a saved plan names the state directory it was made for, wherever apply runs from.
    stateDir: path.resolve(o.stateDir ?? DEFAULT_STATE_DIR),
    allowReplace: o.allowReplace ?? false,
    prune: o.prune ?? false,
    parallelism: int('parallelism', o.parallelism ?? DEFAULTS.parallelism, 1),
    lockTimeout: int('lock-timeout', o.lockTimeout ?? DEFAULTS.lockTimeout, 0),
    detailedExitcode: o.detailedExitcode ?? false,
    autoApprove: o.autoApprove ?? false,
    quiet: o.quiet ?? false,
    color: o.color ?? true,
    out: o.out,
    repair,
    from: o.from,
    strict: o.strict ?? false,
    dryRun: o.dryRun ?? false,
    passphraseFile: o.passphraseFile && path.resolve(o.passphraseFile),
    // A trailing slash says "a directory": kept through resolve.
    restore: {
      vm: o.vm ?? false,
      to: o.to && `${path.resolve(o.to)}${o.to.endsWith('/') && o.to !== '/' ? '/' : ''}`,
      start: o.start ?? false,
    },
    verifyRestore: o.restore ?? false,
    watch: {
      intervalSeconds: interval(o.interval ?? DEFAULTS.interval),
      git: o.git,
      ref: o.ref ?? DEFAULTS.ref,
      path: o.path ?? DEFAULTS.path,
      listen: o.listen ?? DEFAULTS.listen,
      webhookSecretFile: o.webhookSecretFile,
      // Absolute: git runs ssh in the clone, not where the service was started.
      sshKeyFile: abs(o.gitSshKey),
      knownHostsFile: abs(o.knownHosts),
      tokenFile: abs(o.gitTokenFile),
      username: o.gitUsername,
      verifyCommits: abs(o.verifyCommits),
      notify: o.notify ?? [],
      notifyFile: abs(o.notifyFile),
      notifySecretFile: abs(o.notifySecretFile),
      suspend: o.suspend ?? false,
      logFormat: o.logFormat === undefined ? undefined : oneOf('log-format', o.logFormat, ['text', 'json'] as const),
    },
  };
}

/** What completion needs to know of the command line, read from its definition. */
function specOf(cmd: Command): CommandSpec {
  const valueSpec = (label: string): ValueSpec => {
    const complete = /^(PATH|FILE|PLAN\.json)$/.test(label)
      ? 'files'
      : label === 'DIR'
        ? 'dirs'
        : label === 'FORMAT'
          ? ['text', 'json']
          : label === 'SHELL'
            ? ['bash', 'zsh']
            : 'none';
    return { label, complete };
  };
  const help = { short: '-h', long: '--help', description: 'show help', repeatable: false };
  return {
    name: cmd.name(),
    description: cmd.description(),
    options: [
      ...cmd.options
        .filter((o) => o.long !== '--version')
        .map((o) => {
          const label = /[<[]([^>\]]+)[>\]]/.exec(o.flags)?.[1];
          const spec = { short: o.short, long: o.long!, description: o.description, repeatable: o.long === '--file' };
          if (o.long === '--repair') return { ...spec, value: { label: 'scope', complete: ['all'], optionalAttached: true } };
          return label ? { ...spec, value: valueSpec(label) } : spec;
        }),
      help,
      ...(cmd.parent ? [] : [{ long: '--version', description: 'print the version', repeatable: false }]),
    ],
    args: cmd.registeredArguments.map((a) => ({ ...valueSpec(a.name()), required: a.required })),
    commands: cmd.commands.map(specOf),
  };
}

async function main(argv: string[]): Promise<number> {
  const run: Run = { code: EXIT.ok };
  const cli = program(run);
  const seeHelp = (cmd = run.command ?? cli) => `See \`reconcile${pathOf(cmd) ? ` ${pathOf(cmd)}` : ''} --help\`.`;
  try {
    // A bare `--repair` means leaks (see REPAIR_TERM): its value is never the next word.
    await cli.parseAsync(
      argv.map((x) => (x === '--repair' ? '--repair=leaks' : x)),
      { from: 'user' },
    );
    return run.code;
  } catch (e) {
    // --help and --version end the parse this way, after printing.
    if (e instanceof CommanderError) {
      if (e.exitCode === 0) return EXIT.ok;
      process.stderr.write(`reconcile: ${e.message.replace(/^error: /, '')}\n${seeHelp()}\n`);
      return EXIT.usage;
    }
    // A usage error found by the parser, before the command ran: one line, and where help is.
    if (e instanceof UsageError) {
      process.stderr.write(`reconcile: ${e.message}\n${seeHelp(e.command)}\n`);
      return EXIT.usage;
    }
    const output = run.args?.output ?? 'text';
    if (e instanceof ConfigErrors) {
      if (output === 'json') process.stdout.write(`${JSON.stringify({ valid: false, errors: e.errors }, null, 2)}\n`);
      process.stderr.write(`${e.message}\n${e.errors.length} error(s); nothing was changed.\n`);
      return EXIT.error;
    }
    // -o json: stdout always carries a JSON value, an error object when the command failed.
    if (output === 'json') process.stdout.write(`${JSON.stringify({ ok: false, error: (e as Error).message, ...(e instanceof UserError ? e.details : {}) }, null, 2)}\n`);
    if (e instanceof UserError) {
      // A rendered plan starts on a line of its own, not after the prefix.
      process.stderr.write(`reconcile:${e.message.includes('\n') ? '\n' : ' '}${e.message}\n`);
      if (e.exitCode === EXIT.usage) process.stderr.write(`${seeHelp()}\n`);
      return e.exitCode;
    }
    process.stderr.write(`reconcile: ${(e as Error).message}\n`);
    return EXIT.error;
  }
}

process.exitCode = await main(process.argv.slice(2));
