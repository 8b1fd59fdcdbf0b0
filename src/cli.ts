#!/usr/bin/env node
// The `reconcile` command: parses arguments and dispatches; all work happens in reconcile/.
import { readFileSync } from 'node:fs';
import { readFile, writeFile } from 'node:fs/promises';
import { parseArgs } from 'node:util';
import { applyPlan } from './reconcile/apply.js';
import { listBackups, restore, reverify, runBackup } from './reconcile/backup.js';
import { checkFailed, checkImages, runningDiskPaths } from './reconcile/check.js';
import { DURATION_HELP, formatDuration, parseDuration, TIMER_MAX_SECONDS } from './reconcile/durations.js';
import { startHttp } from './watch/http.js';
import { createLogger, defaultLogFormat, type LogFormat } from './watch/log.js';
import { createMetrics } from './watch/metrics.js';
import { WatchService } from './watch/service.js';
import { desiredStateFrom, loadDesiredState } from './reconcile/config.js';
import { makePlan, planWithObservations } from './reconcile/engine.js';
import { checkSameAsFresh, checkStateDir, readSavedPlan, type SavedPlan } from './reconcile/saved-plan.js';
import { ConfigErrors, EXIT, UserError } from './reconcile/errors.js';
import { DEFAULT_STATE_DIR, FileObservationCache } from './reconcile/inventory.js';
import { acquireLock, type Lock } from './reconcile/lock.js';
import { hasChanges, type Plan } from './reconcile/plan.js';
import { printable } from './text.js';
import { renderBackups, renderCheck, renderPlan, renderSummary } from './render.js';
import { connect, resolveUri } from './providers/virsh.js';
import { capacityWarnings, imageStatuses, poolStatuses, renderShow, vmStatuses } from './show.js';

const VERSION = (JSON.parse(readFileSync(new URL('../package.json', import.meta.url), 'utf8')) as { version: string }).version;

const USAGE = `Usage: reconcile <command> [options]

Commands:
  validate             check the YAML (schema, references, units); touches nothing
  plan                 show what apply would change
  apply [PLAN.json]    make the host match the YAML, or execute a saved plan exactly
  show                 list declared objects, what exists, and whether it is in sync
  check                qemu-img check of every declared image (leaks, corruptions)
  backup run NAME      take one backup of schedule NAME now (hooks, verify, retention)
  backup list [NAME]   backups made, with size, age and verification
  backup verify NAME   qemu-img check every copy of NAME again
  restore NAME --from ID   revert to an internal snapshot, or write a copy back
  watch                run as a service: re-apply on every interval, file change or git
                       push, heal drift, run backup schedules, serve /metrics and /status

Options:
  -f, --file PATH          YAML file or directory (repeatable; default ./storage.yaml)
  -o, --output text|json   output format (default text)
      --connect URI        libvirt URI (default: YAML connection, LIBVIRT_DEFAULT_URI, qemu:///system)
      --state-dir DIR      inventory and lock (default ${DEFAULT_STATE_DIR})
      --allow-replace      allow rebuilding images whose format/options/source changed (data is lost)
      --prune              delete objects reconcile created that left the YAML
      --parallelism N      independent actions at once (default 4)
      --lock-timeout SECS  wait this long for another apply (default 300; 0 fails at once)
      --detailed-exitcode  plan: exit 0 no changes, 2 changes, 1 error
      --out FILE           plan: also save the plan as JSON for \`apply FILE\`
      --from ID            restore: the backup to restore (see backup list)
      --interval DUR       watch: reconcile period (90s, 5m, 1h30m; default 1m)
      --git URL            watch: read the YAML from this git repository instead of -f
      --ref REF            watch: branch, tag or commit (default main)
      --path DIR           watch: subdirectory of the repository holding the YAML
      --listen HOST:PORT   watch: HTTP address (default 127.0.0.1:9477)
      --webhook-secret-file F  watch: enables POST /hooks/git, HMAC-SHA256 signed
      --suspend            watch: start suspended (serve status, change nothing)
      --log-format text|json  watch: log lines (default: json when stdout is not a terminal)
      --repair[=all]       check: repair leaked clusters (=all: also corruptions) of
                           images no running domain uses
  -h, --help, --version

Exit codes: 0 success (no changes), 1 error or refused change, 2 changes present
(plan --detailed-exitcode), 64 usage error, 130/143 apply interrupted (SIGINT/SIGTERM).`;

interface Args {
  verb: string;
  rest: string[];
  files: string[];
  output: 'text' | 'json';
  connect?: string;
  stateDir: string;
  allowReplace: boolean;
  prune: boolean;
  parallelism: number;
  lockTimeout: number;
  detailedExitcode: boolean;
  /** -f was given (not the default ./storage.yaml) */
  filesGiven: boolean;
  out?: string;
  repair?: 'leaks' | 'all';
  from?: string;
  watch: { intervalSeconds: number; git?: string; ref: string; path: string; listen: string; webhookSecretFile?: string; suspend: boolean; logFormat?: LogFormat };
}

// What each command takes: an option or an argument it does not use is a usage error, never
// silently ignored (`show NAME`, `check --repair all` used to do something else quietly).
const COMMON = ['file', 'output', 'connect', 'state-dir', 'help', 'version'];
const TAKES: Record<string, { options: string[]; args: [min: number, max: number, what: string] }> = {
  validate: { options: COMMON, args: [0, 0, ''] },
  plan: { options: [...COMMON, 'allow-replace', 'prune', 'detailed-exitcode', 'out'], args: [0, 0, ''] },
  apply: { options: [...COMMON, 'allow-replace', 'prune', 'parallelism', 'lock-timeout'], args: [0, 1, 'PLAN.json'] },
  show: { options: COMMON, args: [0, 0, ''] },
  check: { options: [...COMMON, 'repair', 'parallelism'], args: [0, 0, ''] },
  backup: { options: [...COMMON, 'lock-timeout'], args: [1, 2, 'run NAME | list [NAME] | verify NAME'] },
  restore: { options: [...COMMON, 'from', 'lock-timeout'], args: [1, 1, 'NAME'] },
  watch: { options: [...COMMON, 'allow-replace', 'prune', 'parallelism', 'interval', 'git', 'ref', 'path', 'listen', 'webhook-secret-file', 'suspend', 'log-format'], args: [0, 0, ''] },
};

function checkTakes(verb: string, given: string[], rest: string[]): void {
  const t = TAKES[verb];
  if (!t) return;
  const bad = given.filter((o) => !t.options.includes(o));
  if (bad.length) {
    throw new UserError(`${bad.map((o) => `--${o}`).join(', ')}: not an option of \`${verb}\` (it takes: ${t.options.filter((o) => o !== 'help' && o !== 'version').map((o) => `--${o}`).join(', ')})`, EXIT.usage);
  }
  const [min, max, what] = t.args;
  if (rest.length > max || rest.length < min) {
    const hint = verb === 'check' && rest[0] === 'all' ? '; did you mean --repair=all?' : '';
    throw new UserError(max === 0
      ? `\`${verb}\` takes no argument (got ${rest.map((r) => JSON.stringify(r)).join(' ')})${hint}`
      : `\`${verb}\` takes ${what}${rest.length ? ` (got ${rest.map((r) => JSON.stringify(r)).join(' ')})` : ''}`, EXIT.usage);
  }
}

function parse(argv: string[]): Args | 'help' | 'version' {
  const { values, positionals, tokens } = parseArgs({
    args: argv,
    allowPositionals: true,
    tokens: true,
    options: {
      file: { type: 'string', short: 'f', multiple: true },
      output: { type: 'string', short: 'o', default: 'text' },
      connect: { type: 'string' },
      'state-dir': { type: 'string' },
      'allow-replace': { type: 'boolean', default: false },
      prune: { type: 'boolean', default: false },
      parallelism: { type: 'string', default: '4' },
      'lock-timeout': { type: 'string', default: '300' },
      'detailed-exitcode': { type: 'boolean', default: false },
      out: { type: 'string' },
      repair: { type: 'string' },
      from: { type: 'string' },
      interval: { type: 'string', default: '1m' },
      git: { type: 'string' },
      ref: { type: 'string', default: 'main' },
      path: { type: 'string', default: '.' },
      listen: { type: 'string', default: '127.0.0.1:9477' },
      'webhook-secret-file': { type: 'string' },
      suspend: { type: 'boolean', default: false },
      'log-format': { type: 'string' },
      help: { type: 'boolean', short: 'h' },
      version: { type: 'boolean' },
    },
  });
  if (values.help) return 'help';
  if (values.version) return 'version';
  const [verb, ...rest] = positionals;
  if (!verb) throw new UserError('missing command (validate, plan, apply, show, check, backup, restore, watch)', EXIT.usage);
  checkTakes(verb, [...new Set(tokens.filter((t) => t.kind === 'option').map((t) => (t as { name: string }).name))], rest);
  if (values.output !== 'text' && values.output !== 'json') throw new UserError(`--output must be text or json (got ${values.output})`, EXIT.usage);
  const int = (name: string, v: string, min: number) => {
    if (!/^\d+$/.test(v) || Number(v) < min) throw new UserError(`--${name} must be a whole number >= ${min} (got ${v})`, EXIT.usage);
    return Number(v);
  };
  return {
    verb,
    rest,
    files: values.file?.length ? values.file : ['./storage.yaml'],
    filesGiven: !!values.file?.length,
    output: values.output,
    connect: values.connect,
    stateDir: values['state-dir'] ?? process.env.VIRT_RECONCILE_STATE_DIR ?? DEFAULT_STATE_DIR,
    allowReplace: values['allow-replace'] ?? false,
    prune: values.prune ?? false,
    parallelism: int('parallelism', values.parallelism!, 1),
    lockTimeout: int('lock-timeout', values['lock-timeout']!, 0),
    detailedExitcode: values['detailed-exitcode'] ?? false,
    out: values.out,
    from: values.from,
    watch: {
      intervalSeconds: duration('interval', values.interval!),
      git: values.git, ref: values.ref!, path: values.path!, listen: values.listen!,
      webhookSecretFile: values['webhook-secret-file'], suspend: values.suspend ?? false,
      logFormat: values['log-format'] === undefined ? undefined : values['log-format'] === 'text' || values['log-format'] === 'json' ? values['log-format'] : badLogFormat(values['log-format']),
    },
    repair: values.repair === undefined ? undefined : values.repair === 'all' ? 'all' : values.repair === 'leaks' ? 'leaks' : badRepair(values.repair),
  };
}

function duration(name: string, v: string): number {
  const seconds = parseDuration(v);
  if (typeof seconds !== 'number') throw new UserError(`--${name} must be ${DURATION_HELP} (got ${v})`, EXIT.usage);
  // The interval is a timer: one longer than a timer can wait would fire at once, in a loop.
  if (seconds > TIMER_MAX_SECONDS) throw new UserError(`--${name} must be at most ${formatDuration(TIMER_MAX_SECONDS)} (got ${v})`, EXIT.usage);
  return seconds;
}

function badLogFormat(v: string): never {
  throw new UserError(`--log-format must be text or json (got ${v})`, EXIT.usage);
}

function badRepair(v: string): never {
  throw new UserError(`--repair takes no value (leaks) or =all (got ${v})`, EXIT.usage);
}

const print = (s: string) => process.stdout.write(`${s}\n`);

/**
 * Progress lines: on stdout, or on stderr when stdout carries JSON. They hold paths and reasons
 * from the input, so each is printed as one line whatever it contains.
 */
function progressLog(a: Args): (line: string) => void {
  return a.output === 'json' ? (l) => process.stderr.write(`${printable(l)}\n`) : (l) => print(printable(l));
}

/** The libvirt connection, opened only if something needs it (image files alone do not). */
function virshFor(a: Args, yamlUri?: string) {
  return () => connect(resolveUri(a.connect, yamlUri));
}

async function cmdValidate(a: Args): Promise<number> {
  const state = await loadDesiredState(a.files);
  const n = (k: keyof typeof state) => Object.keys(state[k] as object).length;
  if (a.output === 'json') print(JSON.stringify({ valid: true, files: state.files, pools: n('pools'), images: n('images'), vms: n('vms'), backups: n('backups') }));
  else print(`valid: ${state.files.length} file(s); ${n('pools')} pool(s), ${n('images')} image(s), ${n('vms')} vm(s), ${n('backups')} backup schedule(s)`);
  return EXIT.ok;
}

async function cmdPlan(a: Args): Promise<number> {
  const state = await loadDesiredState(a.files);
  const cache = await FileObservationCache.open(a.stateDir);
  const p = await planWithObservations(state, { stateDir: a.stateDir, allowReplace: a.allowReplace, prune: a.prune, cache, virsh: virshFor(a, state.connection) });
  const plan = p.plan;
  if (a.output === 'text') for (const w of capacityWarnings(poolStatuses(state, p))) process.stderr.write(`${w}\n`);
  if (a.out) {
    if (plan.refusals.length) throw new UserError(`${renderPlan(plan)}\n\nnot saving ${a.out}: a plan with refused changes cannot be applied`);
    // The YAML texts go with the plan: apply recomputes the plan from them and runs it only if identical.
    await writeFile(a.out, `${JSON.stringify({ ...plan, inputs: state.inputs ?? [] }, null, 2)}\n`, { mode: 0o600 });
  }
  print(a.output === 'json' ? JSON.stringify(plan, null, 2) : renderPlan(plan));
  if (plan.refusals.length) return EXIT.error;
  return a.detailedExitcode && hasChanges(plan) ? EXIT.changes : EXIT.ok;
}

async function cmdApply(a: Args): Promise<number> {
  const planFile = a.rest[0];
  const log = progressLog(a);
  // Ctrl-C or SIGTERM: no new action starts, builds in flight are cancelled (their scratch
  // files removed), other actions in flight finish, the lock is released and the summary
  // says what was and was not done. A second signal exits at once, releasing the lock.
  const stop = new AbortController();
  let interrupted: NodeJS.Signals | undefined;
  let lock: Lock | undefined;
  const onSignal = (sig: NodeJS.Signals) => {
    if (interrupted) {
      process.stderr.write(`${sig} again: exiting now\n`);
      lock?.releaseSync();
      process.exit(sig === 'SIGINT' ? EXIT.sigint : EXIT.sigterm);
    }
    interrupted = sig;
    process.stderr.write(`${sig}: stopping: no new action starts; builds in flight are cancelled, other actions in flight finish (${sig} again exits at once)\n`);
    stop.abort();
  };
  process.on('SIGINT', onSignal);
  process.on('SIGTERM', onSignal);
  const interruptedCode = () => (interrupted === 'SIGTERM' ? EXIT.sigterm : EXIT.sigint);
  let saved: SavedPlan | undefined;
  if (planFile && a.filesGiven) throw new UserError('apply PLAN.json runs the YAML the plan embeds; -f is not taken with it', EXIT.usage);
  if (planFile) {
    saved = readSavedPlan(await readFile(planFile, 'utf8'), planFile);
    checkStateDir(saved, a.stateDir, planFile);
  }
  // Bad input must change nothing, not even the state directory: validate before locking.
  const state = saved ? desiredStateFrom(saved.inputs) : await loadDesiredState(a.files);
  const stateDir = a.stateDir;
  let plan: Plan;
  lock = await acquireLock(stateDir, { timeoutSeconds: a.lockTimeout, command: `apply${planFile ? ` ${planFile}` : ''}`, log: (m) => process.stderr.write(`${m}\n`) });
  try {
    const cache = await FileObservationCache.open(stateDir);
    // A saved plan is recomputed from the inputs it embeds, with its own options, and
    // executed only if it is the same: never the operations as written in the file.
    const options = saved ? saved.options : { allowReplace: a.allowReplace, prune: a.prune };
    plan = await makePlan(state, { stateDir, ...options, cache, virsh: virshFor(a, state.connection) });
    if (saved) checkSameAsFresh(saved, plan, planFile!);
    if (plan.refusals.length) {
      throw new UserError(`${renderPlan(plan)}\n\nnothing was applied`, EXIT.error, { error: `${plan.refusals.length} change(s) refused; nothing was applied`, reason: 'refused', refusals: plan.refusals, notes: plan.notes });
    }
    if (interrupted) throw new UserError(`${interrupted} before anything was applied; nothing was changed`, interruptedCode(), { reason: 'interrupted' });
    if (!hasChanges(plan)) {
      await cache.save();
      if (a.output === 'json') print(JSON.stringify({ ok: true, results: [], counts: { created: 0, updated: 0, replaced: 0, deleted: 0, failed: 0, cancelled: 0, notStarted: 0 } }));
      else print(renderPlan(plan));
      return EXIT.ok;
    }
    const result = await applyPlan(plan, { stateDir, parallelism: a.parallelism, cache, log, virsh: virshFor(a, plan.connection), signal: stop.signal });
    const ok = !interrupted && !result.counts.failed;
    const outcome = ok ? { ok } : { ok, reason: interrupted ? 'interrupted' : 'failed', ...(interrupted ? { interrupted } : {}) };
    print(a.output === 'json' ? JSON.stringify({ ...outcome, ...result }, null, 2) : renderSummary(result, interrupted));
    if (a.output === 'text' && plan.notes.length) print(['', 'Notes:', ...plan.notes.map((n) => `  ${printable(n)}`)].join('\n'));
    if (interrupted) return interruptedCode();
    return result.counts.failed ? EXIT.error : EXIT.ok;
  } finally {
    await lock.release();
  }
}

async function cmdShow(a: Args): Promise<number> {
  const state = await loadDesiredState(a.files);
  const cache = await FileObservationCache.open(a.stateDir);
  const p = await planWithObservations(state, { stateDir: a.stateDir, allowReplace: false, prune: false, cache, virsh: virshFor(a, state.connection) });
  const images = imageStatuses(state, p);
  const pools = poolStatuses(state, p);
  const vms = vmStatuses(state, p);
  print(a.output === 'json' ? JSON.stringify({ pools, images, vms, notes: p.plan.notes }, null, 2) : renderShow(pools, images, vms, p.plan.notes));
  return EXIT.ok;
}

async function cmdCheck(a: Args): Promise<number> {
  const state = await loadDesiredState(a.files);
  const cache = await FileObservationCache.open(a.stateDir);
  const virsh = virshFor(a, state.connection);
  const p = await planWithObservations(state, { stateDir: a.stateDir, allowReplace: false, prune: false, cache, virsh });
  let inUse = new Set<string>();
  try {
    const volPath = (pool: string, vol: string) => p.observed.volumes.get(`${pool}/${vol}`)?.path;
    inUse = await runningDiskPaths(virsh(), volPath);
  } catch (e) {
    if (a.repair) throw new UserError(`cannot ask libvirt which images running domains use (${(e as Error).message}); not repairing anything`);
  }
  const rows = await checkImages(state, p, { repair: a.repair, parallelism: a.parallelism, inUse });
  if (a.output === 'json') print(JSON.stringify(rows, null, 2));
  else print(renderCheck(rows));
  return checkFailed(rows) ? EXIT.error : EXIT.ok;
}

function backupSpec(state: Awaited<ReturnType<typeof loadDesiredState>>, name: string | undefined) {
  if (!name) throw new UserError('name a backup schedule (one of backups: in the YAML)', EXIT.usage);
  const spec = state.backups[name];
  if (!spec) throw new UserError(`no backup schedule ${JSON.stringify(name)} (declared: ${Object.keys(state.backups).join(', ') || 'none'})`);
  return spec;
}

async function cmdBackup(a: Args): Promise<number> {
  const [sub, name] = a.rest;
  const state = await loadDesiredState(a.files);
  const log = progressLog(a);
  if (sub === 'list') {
    if (name) backupSpec(state, name);
    const rows = await listBackups(a.stateDir, name);
    if (a.output === 'json') print(JSON.stringify(rows, null, 2));
    else print(renderBackups(rows));
    return EXIT.ok;
  }
  const spec = backupSpec(state, name);
  const lock = await acquireLock(a.stateDir, { timeoutSeconds: a.lockTimeout, command: `backup ${sub} ${name}`, log: (m) => process.stderr.write(`${m}\n`) });
  try {
    if (sub === 'run') {
      const r = await runBackup(spec, { virsh: virshFor(a, state.connection)(), stateDir: a.stateDir, log });
      if (a.output === 'json') print(JSON.stringify(r, null, 2));
      return EXIT.ok;
    }
    if (sub === 'verify') {
      const runs = await reverify(a.stateDir, spec.name);
      if (a.output === 'json') print(JSON.stringify(runs, null, 2));
      else for (const r of runs) print(`${r.id}: ${r.verified ? 'verified' : `FAILED: ${r.verifyError}`}`);
      return runs.every((r) => r.verified) ? EXIT.ok : EXIT.error;
    }
    throw new UserError(`unknown backup command ${JSON.stringify(sub)} (run, list, verify)`, EXIT.usage);
  } finally {
    await lock.release();
  }
}

async function cmdRestore(a: Args): Promise<number> {
  const state = await loadDesiredState(a.files);
  const spec = backupSpec(state, a.rest[0]);
  if (!a.from) throw new UserError('restore needs --from ID (see `reconcile backup list`)', EXIT.usage);
  const lock = await acquireLock(a.stateDir, { timeoutSeconds: a.lockTimeout, command: `restore ${spec.name}`, log: (m) => process.stderr.write(`${m}\n`) });
  try {
    await restore(spec, a.from, { virsh: virshFor(a, state.connection)(), stateDir: a.stateDir, log: print });
    print(`restored ${a.from}`);
    return EXIT.ok;
  } finally {
    await lock.release();
  }
}

async function cmdWatch(a: Args): Promise<number> {
  const w = a.watch;
  const [host, port] = [w.listen.replace(/:\d+$/, '').replace(/^\[|\]$/g, ''), Number(/:(\d+)$/.exec(w.listen)?.[1] ?? 'NaN')];
  if (!Number.isInteger(port)) throw new UserError(`--listen must be HOST:PORT (got ${w.listen})`, EXIT.usage);
  const secret = w.webhookSecretFile ? (await readFile(w.webhookSecretFile, 'utf8')).trim() : undefined;
  const logger = createLogger(w.logFormat ?? defaultLogFormat());
  const stamp = (l: string) => logger.info(l);
  const metrics = createMetrics();
  const service = new WatchService({
    files: a.files, git: w.git ? { url: w.git, ref: w.ref, subdir: w.path } : undefined, stateDir: a.stateDir,
    intervalSeconds: w.intervalSeconds, allowReplace: a.allowReplace, prune: a.prune, parallelism: a.parallelism, suspended: w.suspend,
    virsh: (yamlUri) => connect(resolveUri(a.connect, yamlUri)), metrics, logger,
  });
  const server = await startHttp({ host, port, service, metrics, webhookSecret: secret, log: stamp });
  stamp(`watching ${service.status.source} every ${w.intervalSeconds}s; http://${w.listen}/`);
  await service.start();
  await new Promise<void>((resolve) => {
    let stopping = false;
    // process.on, not once: execa's exit handler (signal-exit) re-raises a signal nobody else
    // listens to, which would kill the process in the middle of the action in flight.
    const stop = (sig: string) => {
      if (stopping) {
        stamp(`${sig} again: exiting now`);
        process.exit(EXIT.error);
      }
      stopping = true;
      stamp(`${sig}: stopping: no new action starts; builds in flight are cancelled, other actions in flight finish`);
      void service.stop().then(() => server.close(() => resolve()));
      server.closeAllConnections();
    };
    process.on('SIGTERM', () => stop('SIGTERM'));
    process.on('SIGINT', () => stop('SIGINT'));
  });
  stamp('stopped');
  return EXIT.ok;
}

const COMMANDS: Record<string, (a: Args) => Promise<number>> = {
  watch: cmdWatch,
  validate: cmdValidate, plan: cmdPlan, apply: cmdApply, show: cmdShow, check: cmdCheck, backup: cmdBackup, restore: cmdRestore,
};

async function main(): Promise<number> {
  let args: ReturnType<typeof parse>;
  try {
    // `--repair` alone means leaks; parseArgs needs a value for a string option.
    args = parse(process.argv.slice(2).map((x) => (x === '--repair' ? '--repair=leaks' : x)));
  } catch (e) {
    // A short usage error: what is wrong, and where the full help is.
    process.stderr.write(`reconcile: ${(e as Error).message.replace(/^Unknown option '([^']*)'.*$/s, 'unknown option $1')}\nSee \`reconcile --help\`.\n`);
    return EXIT.usage;
  }
  if (args === 'help') return print(USAGE), EXIT.ok;
  if (args === 'version') return print(VERSION), EXIT.ok;
  const cmd = COMMANDS[args.verb];
  if (!cmd) {
    process.stderr.write(`reconcile: unknown command ${JSON.stringify(args.verb)}\n\n${USAGE}\n`);
    return EXIT.usage;
  }
  try {
    return await cmd(args);
  } catch (e) {
    if (e instanceof ConfigErrors) {
      if (args.output === 'json') print(JSON.stringify({ valid: false, errors: e.errors }, null, 2));
      process.stderr.write(`${e.message}\n${e.errors.length} error(s); nothing was changed.\n`);
      return EXIT.error;
    }
    // -o json: stdout always carries a JSON value, an error object when the command failed.
    if (args.output === 'json') print(JSON.stringify({ ok: false, error: (e as Error).message, ...(e instanceof UserError ? e.details : {}) }, null, 2));
    if (e instanceof UserError) {
      // A rendered plan starts on a line of its own, not after the prefix.
      process.stderr.write(`reconcile:${e.message.includes('\n') ? '\n' : ' '}${e.message}\n`);
      return e.exitCode;
    }
    process.stderr.write(`reconcile: ${(e as Error).message}\n`);
    return EXIT.error;
  }
}

process.exitCode = await main();
