// What each `reconcile` command does with its parsed options; all work happens in reconcile/.
// cli.ts parses the command line and loads this module only when a command runs.
import { constants } from 'node:fs';
import { access, readFile, writeFile } from 'node:fs/promises';
import path from 'node:path';
import type { LogFormat } from './watch/log.js';
import type { SavedPlan } from './reconcile/saved-plan.js';
import type { Lock } from './reconcile/lock.js';
import { desiredStateFrom, loadDesiredState } from './reconcile/config.js';
import { formatDuration } from './reconcile/durations.js';
import { EXIT, UserError } from './reconcile/errors.js';
import type { BackupSpec, DesiredState } from './reconcile/model.js';
import type { HostTarget } from './reconcile/hosts.js';
import { hasChanges, hasPendingChanges, type Plan } from './reconcile/plan.js';
import { colorsFor } from './colors.js';
import { printable } from './text.js';

// Each command loads only what it uses: `validate` must not pay for libvirt, the watch
// service, metrics or backups (see the start-up budget in `npm run bench`).
const engine = () => import('./reconcile/engine.js');
const inventory = () => import('./reconcile/inventory.js');
const locking = () => import('./reconcile/lock.js');
const savedPlans = () => import('./reconcile/saved-plan.js');
const rendering = () => import('./render.js');
const showing = () => import('./show.js');
const backups = () => import('./backups/backup.js');

/** Every option of every command, with its default where the command does not take it. */
export interface Args {
  /** the command's arguments (backup: [run|list|verify, NAME]) */
  rest: string[];
  files: string[];
  /** -f was given (not the default ./storage.yaml) */
  filesGiven: boolean;
  /** the host this run is for (--host, --label; default this machine) */
  target: HostTarget;
  /** --host or --label was given */
  targetGiven: boolean;
  /** validate --all-hosts: the hosts file */
  allHosts?: string;
  /** plan, apply: do now what waits for a maintenance window */
  outsideWindow: boolean;
  output: 'text' | 'json';
  connect?: string;
  stateDir: string;
  allowReplace: boolean;
  prune: boolean;
  parallelism: number;
  lockTimeout: number;
  detailedExitcode: boolean;
  autoApprove: boolean;
  /** no progress of long work */
  quiet: boolean;
  /** false with --no-color */
  color: boolean;
  out?: string;
  repair?: 'leaks' | 'all';
  from?: string;
  /** plan warnings are errors */
  strict: boolean;
  /** backup prune: say, change nothing */
  dryRun: boolean;
  /** restore: the passphrase an encrypted backup was made with, if not the disk's current one */
  passphraseFile?: string;
  /** restore: define the domain again (--vm), write to a new path (--to), start it after (--start) */
  restore: { vm: boolean; to?: string; start: boolean };
  /** backup verify --restore */
  verifyRestore: boolean;
  watch: {
    intervalSeconds: number;
    git?: string;
    ref: string;
    path: string;
    listen: string;
    webhookSecretFile?: string;
    /** git access and trust (see tools/git.ts) */
    sshKeyFile?: string;
    knownHostsFile?: string;
    tokenFile?: string;
    username?: string;
    verifyCommits?: string;
    /** notification webhooks (see watch/notify.ts) and the secret their posts are signed with */
    notify: string[];
    /** more webhooks, one per line, from a file (kept out of argv) */
    notifyFile?: string;
    notifySecretFile?: string;
    suspend: boolean;
    logFormat?: LogFormat;
  };
}

const print = (s: string) => process.stdout.write(`${s}\n`);

/**
 * Progress lines: on stdout, or on stderr when stdout carries JSON. They hold paths and reasons
 * from the input, so each is printed as one line whatever it contains.
 */
function progressLog(a: Args): (line: string) => void {
  return a.output === 'json' ? (l) => process.stderr.write(`${printable(l)}\n`) : (l) => print(printable(l));
}

/** How long work shows progress: a live line on a terminal (stderr), else a line every 10 s with the log; none with --quiet. */
async function progressFor(a: Args, log: (line: string) => void) {
  const m = await import('./progress/progress.js');
  if (a.quiet) return m.quietProgress;
  if (process.stderr.isTTY) return (await import('./progress/terminal.js')).terminalProgress(process.stderr);
  return m.periodicProgress(log);
}

/** Where text for a person goes: stdout, or stderr when stdout carries JSON. */
function humanStream(a: Args): NodeJS.WriteStream {
  return a.output === 'json' ? process.stderr : process.stdout;
}

/** The libvirt connection, opened only if something needs it (image files alone do not). */
async function virshFor(a: Args, yamlUri?: string) {
  const { connect, resolveUri } = await import('./tools/virsh.js');
  return () => connect(resolveUri(a.connect, yamlUri));
}

export async function cmdValidate(a: Args): Promise<number> {
  if (a.allHosts) return validateFleet(a, a.allHosts);
  const state = await loadDesiredState(a.files, a.target);
  const counts = declaredCounts(state);
  const others = state.otherHostsFiles ?? [];
  if (a.output === 'json') print(JSON.stringify({ valid: true, host: state.target, files: state.files, otherHostsFiles: others, ...counts }));
  else print(`valid: ${summary(state)}${others.length ? `; ${others.length} file(s) for other hosts left out` : ''}`);
  return EXIT.ok;
}

function declaredCounts(state: DesiredState) {
  const n = (k: keyof DesiredState) => Object.keys(state[k] as object).length;
  return { pools: n('pools'), images: n('images'), vms: n('vms'), backups: n('backups') };
}

function summary(state: DesiredState): string {
  const c = declaredCounts(state);
  // The secrets reconcile keeps for encrypted images (named image/NAME) are not the YAML's own.
  const kept = Object.keys(state.secrets).filter((k) => k.includes('/')).length;
  const secrets = Object.keys(state.secrets).length - kept;
  return `${state.files.length} file(s); ${c.pools} pool(s), ${c.images} image(s), ${c.vms} vm(s), ${c.backups} backup schedule(s), ${secrets} secret(s)${kept ? ` (and ${kept} kept for encrypted images)` : ''}`;
}

async function validateFleet(a: Args, hostsFile: string): Promise<number> {
  const { validateAllHosts } = await import('./reconcile/all-hosts.js');
  const { ConfigErrors, formatConfigError } = await import('./reconcile/errors.js');
  const r = await validateAllHosts(a.files, hostsFile);
  if (r.errors.length) {
    if (a.output !== 'json') for (const w of r.warnings) process.stderr.write(`warning: ${formatConfigError(w)}\n`);
    throw new ConfigErrors(r.errors);
  }
  if (a.output === 'json')
    print(
      JSON.stringify({
        valid: !(a.strict && r.warnings.length),
        hosts: Object.fromEntries(r.hosts.map((h) => [h.target.host, { labels: h.target.labels, files: h.state.files, ...declaredCounts(h.state) }])),
        warnings: r.warnings,
      }),
    );
  else {
    for (const w of r.warnings) process.stderr.write(`${a.strict ? 'error' : 'warning'}: ${formatConfigError(w)}\n`);
    for (const h of r.hosts) print(`valid for ${h.target.host}: ${summary(h.state)}`);
    if (a.strict && r.warnings.length) process.stderr.write(`${r.warnings.length} file(s) select no listed host: an error with --strict\n`);
  }
  return a.strict && r.warnings.length ? EXIT.error : EXIT.ok;
}

export async function cmdPlan(a: Args): Promise<number> {
  const [{ FileObservationCache }, { planWithObservations }, { capacityWarnings, poolStatuses }, { toSavedPlan }, { renderPlan }] = await Promise.all([
    inventory(),
    engine(),
    showing(),
    savedPlans(),
    rendering(),
  ]);
  const state = await loadDesiredState(a.files, a.target);
  await (await import('./reconcile/state-host.js')).checkStateHost(a.stateDir, state, a.targetGiven);
  const cache = await FileObservationCache.open(a.stateDir);
  const p = await planWithObservations(state, {
    stateDir: a.stateDir,
    allowReplace: a.allowReplace,
    prune: a.prune,
    outsideWindow: a.outsideWindow,
    cache,
    virsh: await virshFor(a, state.connection),
  });
  const plan = p.plan;
  if (a.strict) warningsAsRefusals(plan);
  if (a.output === 'text') for (const w of capacityWarnings(poolStatuses(state, p))) process.stderr.write(`${w}\n`);
  // plan takes no lock: while an apply runs, what it is making may look unfinished or not ours.
  const busy = await locking().then((m) => m.lockHolder(a.stateDir));
  if (busy && a.output === 'text') process.stderr.write(`note: \`${busy.command}\` (pid ${busy.pid}) is running in ${a.stateDir}; this plan may show its work in progress\n`);
  if (a.out) {
    if (plan.refusals.length)
      throw new UserError(`${renderPlan(plan, { colors: colorsFor(process.stderr, a.color) })}\n\nnot saving ${a.out}: a plan with refused changes cannot be applied`);
    // The YAML texts go with the plan: apply recomputes the plan from them and runs it only if identical.
    await writeFile(a.out, `${JSON.stringify(toSavedPlan(plan, state.inputs ?? [], state.target), null, 2)}\n`, { mode: 0o600 });
  }
  print(
    a.output === 'json' ? JSON.stringify({ ...toSavedPlan(plan, [], state.target), inputs: undefined }, null, 2) : renderPlan(plan, { colors: colorsFor(process.stdout, a.color) }),
  );
  if (a.out && a.output === 'text')
    process.stderr.write(`Saved the plan to ${printable(a.out)}: \`reconcile apply ${printable(a.out)}\` applies exactly it, if the host has not changed by then.\n`);
  if (plan.refusals.length) return EXIT.error;
  return a.detailedExitcode && hasPendingChanges(plan) ? EXIT.changes : EXIT.ok;
}

/**
 * --strict: the plan's warnings (a passphrase or secret value file others can read) are
 * refusals — `plan` fails and `apply` changes nothing until they are dealt with.
 */
function warningsAsRefusals(plan: Plan): void {
  const warnings = plan.notes.filter((n) => n.startsWith('warning: '));
  if (!warnings.length) return;
  plan.notes = plan.notes.filter((n) => !warnings.includes(n));
  for (const w of warnings) plan.refusals.push({ id: 'strict', message: `${w.slice('warning: '.length)} (an error with --strict)` });
}

/** What an apply runs: the desired state, the plan options, and a check of the fresh plan. */
interface ApplyInput {
  state: DesiredState;
  options: Plan['options'];
  /** a saved plan is run only if the fresh plan is the same */
  check?: (plan: Plan) => void;
}

export async function cmdApply(a: Args): Promise<number> {
  const { checkSameAsFresh, checkStateDir, readSavedPlan } = await savedPlans();
  const planFile = a.rest[0];
  if (planFile && a.filesGiven) throw new UserError('apply PLAN.json runs the YAML the plan embeds; -f is not taken with it', EXIT.usage);
  // A saved plan carries its own --prune / --allow-replace: flags given again would be ignored, silently.
  if (planFile && (a.prune || a.allowReplace || a.outsideWindow))
    throw new UserError('apply PLAN.json runs with the options the plan was made with; --prune and --allow-replace belong to `reconcile plan --out`', EXIT.usage);
  return applyDesired(a, {
    verb: 'apply',
    command: `apply${planFile ? ` ${planFile}` : ''}`,
    // A saved plan was reviewed when it was made: it is not shown or asked about again.
    review: planFile ? 'never' : 'when-destructive',
    input: async (): Promise<ApplyInput> => {
      if (!planFile) return { state: await loadDesiredState(a.files, a.target), options: { allowReplace: a.allowReplace, prune: a.prune, outsideWindow: a.outsideWindow } };
      const text = await readFile(planFile, 'utf8').catch((e: NodeJS.ErrnoException) => {
        throw new UserError(`cannot read ${planFile}: ${e.code === 'ENOENT' ? 'no such file (make one with `reconcile plan --out FILE`)' : e.message}`);
      });
      const saved: SavedPlan = readSavedPlan(text, planFile);
      checkStateDir(saved, a.stateDir, planFile);
      // A plan made for another host (plan --host h2, in CI) is that host's to apply.
      if (saved.host && saved.host.host.toLowerCase() !== a.target.host.toLowerCase())
        throw new UserError(
          `${planFile} was made for host ${saved.host.host}, and this is ${a.target.host}${a.targetGiven ? '' : ' (--host says otherwise if this machine is known by another name)'}; nothing was applied`,
          EXIT.error,
          { reason: 'other-host' },
        );
      // Recomputed from the inputs it embeds, with its own options, and executed only if it is
      // the same: never the operations as written in the file.
      return { state: desiredStateFrom(saved.inputs, [], saved.host), options: saved.options, check: (plan) => checkSameAsFresh(saved, plan, planFile) };
    },
  });
}

/** `destroy`: everything reconcile created (its inventory), as prune with nothing declared. */
export async function cmdDestroy(a: Args): Promise<number> {
  const { nothingDeclared, refuseProtected } = await import('./reconcile/destroy.js');
  return applyDesired(a, {
    verb: 'destroy',
    command: 'destroy',
    review: 'always',
    input: async () => {
      const declared = await loadDesiredState(a.files, a.target);
      return { state: nothingDeclared(declared), options: { allowReplace: false, prune: true }, check: (plan) => refuseProtected(plan, declared) };
    },
  });
}

/**
 * Plans and applies under the lock; apply and destroy differ only in their input and in when
 * the plan is shown (destroy: always; apply: when it needs consent, to ask for it).
 */
async function applyDesired(
  a: Args,
  how: { verb: 'apply' | 'destroy'; command: string; review: 'always' | 'when-destructive' | 'never'; input: () => Promise<ApplyInput> },
): Promise<number> {
  const [{ applyPlan, tidyInterrupted }, { planWithObservations }, { FileObservationCache }, { acquireLock }, { renderPlan, renderSummary }, { askYes, canAsk, needsConsent }] =
    await Promise.all([import('./reconcile/apply.js'), engine(), inventory(), locking(), rendering(), import('./confirm.js')]);
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
  const notApplied = () => new UserError(`${interrupted} before anything was applied; nothing was changed`, interruptedCode(), { reason: 'interrupted' });
  // Bad input must change nothing, not even the state directory: validate before locking.
  const { state, options, check } = await how.input();
  const stateDir = a.stateDir;
  const human = humanStream(a);
  const colors = colorsFor(human, a.color);
  const { checkStateHost, bindStateHost } = await import('./reconcile/state-host.js');
  await checkStateHost(stateDir, state, a.targetGiven);
  lock = await acquireLock(stateDir, { timeoutSeconds: a.lockTimeout, command: how.command, log: (m) => process.stderr.write(`${m}\n`) });
  try {
    await bindStateHost(stateDir, state);
    const cache = await FileObservationCache.open(stateDir);
    const { plan, inventory: recorded } = await planWithObservations(state, { stateDir, ...options, cache, virsh: await virshFor(a, state.connection) });
    check?.(plan);
    if (a.strict) warningsAsRefusals(plan);
    if (plan.refusals.length) {
      throw new UserError(`${renderPlan(plan, { colors: colorsFor(process.stderr, a.color) })}\n\nnothing was applied`, EXIT.error, {
        error: `${plan.refusals.length} change(s) refused; nothing was applied`,
        reason: 'refused',
        refusals: plan.refusals,
        notes: plan.notes,
      });
    }
    if (interrupted) throw notApplied();
    if (!hasChanges(plan)) {
      await tidyInterrupted(stateDir, log, recorded);
      await cache.save();
      if (a.output === 'json')
        print(
          JSON.stringify({
            ok: true,
            results: [],
            counts: { created: 0, updated: 0, replaced: 0, deleted: 0, forgotten: 0, failed: 0, cancelled: 0, notStarted: 0 },
            ...(plan.waiting?.length ? { waiting: plan.waiting } : {}),
          }),
        );
      else print(renderPlan(plan, { colors }));
      return EXIT.ok;
    }
    // On a terminal, a plan that loses data is shown and applied only on "yes" (the lock is held
    // meanwhile, as Terraform holds it, so what is applied is exactly what was shown).
    // A person at the keyboard is asked even when the output goes to a pipe (`destroy | tee log`):
    // the plan and the question then go to the terminal on stderr.
    const askOn = canAsk(human) ? human : canAsk(process.stderr) ? process.stderr : undefined;
    const ask = how.review !== 'never' && !a.autoApprove && needsConsent(plan) && askOn !== undefined;
    if (ask && askOn !== human) askOn.write(`${renderPlan(plan, { colors: colorsFor(askOn, a.color) })}\n\n`);
    if ((ask && askOn === human) || (how.review === 'always' && a.output === 'text')) human.write(`${renderPlan(plan, { colors })}\n\n`);
    if (ask && askOn) {
      const yes = await askYes(askOn, { signal: stop.signal, onCtrlC: () => onSignal('SIGINT') });
      if (interrupted) throw notApplied();
      if (!yes) throw new UserError(`${how.verb} cancelled (the answer was not "yes"); nothing was changed`, EXIT.error, { reason: 'cancelled' });
    }
    const progress = await progressFor(a, log);
    const result = await applyPlan(plan, { stateDir, parallelism: a.parallelism, cache, log, progress, virsh: await virshFor(a, plan.connection), signal: stop.signal });
    const ok = !interrupted && !result.counts.failed;
    const outcome = ok ? { ok } : { ok, reason: interrupted ? 'interrupted' : 'failed', ...(interrupted ? { interrupted } : {}) };
    print(
      a.output === 'json'
        ? JSON.stringify({ ...outcome, ...result, ...(plan.waiting?.length ? { waiting: plan.waiting } : {}) }, null, 2)
        : renderSummary(result, interrupted, how.verb),
    );
    if (a.output === 'text' && plan.notes.length) print(['', 'Notes:', ...plan.notes.map((n) => `  ${printable(n)}`)].join('\n'));
    if (a.output === 'text' && plan.waiting?.length)
      print(
        `\n${plan.waiting.length} change(s) wait for a maintenance window${plan.waiting[0]!.opensAt ? ` (the next opens at ${plan.waiting[0]!.opensAt})` : ''}: ${plan.waiting.map((w) => w.id).join(', ')}`,
      );
    if (interrupted) return interruptedCode();
    return result.counts.failed ? EXIT.error : EXIT.ok;
  } finally {
    await lock.release();
  }
}

export async function cmdShow(a: Args): Promise<number> {
  const [{ FileObservationCache }, { planWithObservations }, { imageStatuses, poolStatuses, publishStatuses, renderShow, secretStatuses, vmStatuses }] = await Promise.all([
    inventory(),
    engine(),
    showing(),
  ]);
  const state = await loadDesiredState(a.files, a.target);
  await (await import('./reconcile/state-host.js')).checkStateHost(a.stateDir, state, a.targetGiven);
  const cache = await FileObservationCache.open(a.stateDir);
  const p = await planWithObservations(state, { stateDir: a.stateDir, allowReplace: false, prune: false, cache, virsh: await virshFor(a, state.connection) });
  const images = imageStatuses(state, p);
  const pools = poolStatuses(state, p);
  const vms = vmStatuses(state, p);
  const secrets = secretStatuses(state, p);
  const published = publishStatuses(state, p);
  print(
    a.output === 'json'
      ? JSON.stringify({ secrets, pools, images, published, vms, notes: p.plan.notes }, null, 2)
      : renderShow(pools, images, vms, p.plan.notes, secrets, published),
  );
  return EXIT.ok;
}

export async function cmdCheck(a: Args): Promise<number> {
  const [{ FileObservationCache }, { planWithObservations }, { checkFailed, checkImages, runningDiskPaths }, { present }, { renderCheck }] = await Promise.all([
    inventory(),
    engine(),
    import('./checks/check.js'),
    import('./providers/observe.js'),
    rendering(),
  ]);
  const state = await loadDesiredState(a.files, a.target);
  await (await import('./reconcile/state-host.js')).checkStateHost(a.stateDir, state, a.targetGiven);
  const cache = await FileObservationCache.open(a.stateDir);
  const virsh = await virshFor(a, state.connection);
  const p = await planWithObservations(state, { stateDir: a.stateDir, allowReplace: false, prune: false, cache, virsh });
  let inUse = new Set<string>();
  try {
    const volPath = (pool: string, vol: string) => present(p.observed.volumes.get(`${pool}/${vol}`))?.path;
    inUse = await runningDiskPaths(virsh(), volPath);
  } catch (e) {
    if (a.repair) throw new UserError(`cannot ask libvirt which images running domains use (${(e as Error).message}); not repairing anything`);
  }
  const rows = await checkImages(state, p, { repair: a.repair, parallelism: a.parallelism, inUse });
  print(a.output === 'json' ? JSON.stringify(rows, null, 2) : renderCheck(rows));
  return checkFailed(rows) ? EXIT.error : EXIT.ok;
}

function backupSpec(state: DesiredState, name: string) {
  const spec = state.backups[name];
  if (!spec) throw new UserError(`no backup schedule ${JSON.stringify(name)} (declared: ${Object.keys(state.backups).join(', ') || 'none'})`);
  return spec;
}

export async function cmdBackupList(a: Args): Promise<number> {
  const [{ listBackups }, { renderBackups }] = await Promise.all([backups(), rendering()]);
  const [name] = a.rest;
  const state = await loadDesiredState(a.files, a.target);
  if (name) backupSpec(state, name);
  const rows = await listBackups(a.stateDir, name);
  print(a.output === 'json' ? JSON.stringify(rows, null, 2) : renderBackups(rows));
  return EXIT.ok;
}

type BackupModule = typeof import('./backups/backup.js');

/**
 * A command on one backup schedule (the first argument): the YAML loaded, the schedule found,
 * and the state directory's lock held while `fn` runs (`verb` names it to a waiting command).
 * `context(log)` is what the backup functions work with: libvirt (connected on first use),
 * the state directory, where progress goes, and the declared images' passphrase files.
 */
async function onSchedule(
  a: Args,
  verb: string,
  fn: (state: DesiredState, spec: BackupSpec, b: BackupModule, context: (log: (line: string) => void) => Promise<import('./backups/backup.js').BackupContext>) => Promise<number>,
): Promise<number> {
  const [b, { acquireLock }] = await Promise.all([backups(), locking()]);
  const state = await loadDesiredState(a.files, a.target);
  const spec = backupSpec(state, a.rest[0]!);
  await (await import('./reconcile/state-host.js')).checkStateHost(a.stateDir, state, a.targetGiven);
  const context = async (log: (line: string) => void) => ({
    virsh: await (await virshFor(a, state.connection))(),
    stateDir: a.stateDir,
    log,
    passphrases: b.passphraseFiles(state),
  });
  const lock = await acquireLock(a.stateDir, { timeoutSeconds: a.lockTimeout, command: `${verb} ${spec.name}`, log: (m) => process.stderr.write(`${m}\n`) });
  try {
    return await fn(state, spec, b, context);
  } finally {
    await lock.release();
  }
}

export const cmdBackupRun = (a: Args) =>
  onSchedule(a, 'backup run', async (_state, spec, { runBackup }, context) => {
    const r = await runBackup(spec, await context(progressLog(a)));
    if (a.output === 'json') print(JSON.stringify(r, null, 2));
    return EXIT.ok;
  });

export const cmdBackupVerify = (a: Args) =>
  onSchedule(a, 'backup verify', async (state, spec, { reverify, passphraseFiles, verifyByRestore }, context) => {
    const runs = await reverify(a.stateDir, spec.name, passphraseFiles(state));
    const restored = a.verifyRestore ? await verifyByRestore(spec, await context(progressLog(a))) : undefined;
    if (a.output === 'json') print(JSON.stringify(restored ? { runs, restored } : runs, null, 2));
    else {
      for (const r of runs) print(printable(`${r.id}: ${r.verified ? 'verified' : `FAILED: ${r.verifyError}`}`));
      if (restored)
        print(printable(`${restored.id}: restored to a scratch path and compared: ${restored.restoreVerifyError ? `FAILED: ${restored.restoreVerifyError}` : 'identical'}`));
    }
    return runs.every((r) => r.verified) && !restored?.restoreVerifyError ? EXIT.ok : EXIT.error;
  });

export const cmdBackupPrune = (a: Args) =>
  onSchedule(a, 'backup prune', async (_state, spec, { applyRetention, pruneVerdict }, context) => {
    const now = new Date();
    if (a.dryRun) {
      const v = await pruneVerdict(spec, a.stateDir, now);
      if (a.output === 'json') print(JSON.stringify({ keep: Object.fromEntries(v.keep), remove: v.remove }, null, 2));
      else {
        for (const [id, why] of v.keep) print(printable(`keep    ${id}  (${why.join(', ')})`));
        for (const r of v.remove) print(printable(`remove  ${r.id}  (${r.why})`));
        print(`${v.remove.length} backup(s) would be removed, ${v.keep.size} kept (--dry-run: nothing was changed)`);
      }
      return EXIT.ok;
    }
    const gone = await applyRetention(spec, await context(print), now);
    print(`${gone.length} backup(s) removed`);
    return EXIT.ok;
  });

export const cmdBackupResume = (a: Args) =>
  onSchedule(a, 'backup resume', async (_state, spec, { resumeSchedule }) => {
    print((await resumeSchedule(a.stateDir, spec.name)) ? `backups.${spec.name} resumed: it runs on its schedule again` : `backups.${spec.name} was not suspended`);
    return EXIT.ok;
  });

const protecting = (a: Args, on: boolean) =>
  onSchedule(a, on ? 'backup protect' : 'backup unprotect', async (_state, spec, { setProtected }) => {
    const id = a.rest[1]!;
    await setProtected(a.stateDir, spec.name, id, on);
    print(printable(`${id}: ${on ? 'protected (retention never removes it)' : 'no longer protected'}`));
    return EXIT.ok;
  });

export const cmdBackupProtect = (a: Args) => protecting(a, true);
export const cmdBackupUnprotect = (a: Args) => protecting(a, false);

export async function cmdRestore(a: Args): Promise<number> {
  if (!a.from) throw new UserError('restore needs --from ID (see `reconcile backup list`)', EXIT.usage);
  const from = a.from;
  const { vm, to, start } = a.restore;
  if (to && (vm || start)) throw new UserError('restore --to writes new files and leaves the VM alone: it takes neither --vm nor --start', EXIT.usage);
  return onSchedule(a, 'restore', async (state, spec, { restore, startDomain }, context) => {
    // Writing into a VM's disks is disruptive: only in a maintenance window, if the YAML has any
    // (a restore to new files touches nothing of the VM's).
    if (state.windows?.length && !to && !a.outsideWindow) {
      const { windowState } = await import('./reconcile/windows.js');
      const w = windowState(state.windows, new Date());
      if (!w.open)
        throw new UserError(
          `no maintenance window is open${w.opensAt ? ` (the next opens at ${w.opensAt.toISOString()})` : ''}; a restore writes into ${spec.vm}'s disks. Wait for it, restore --to a new path, or give --outside-window`,
        );
    }
    const ctx = await context(print);
    const written = await restore(spec, from, { ...ctx, backupPassphraseFile: a.passphraseFile, vm, to });
    if (a.output === 'json') print(JSON.stringify({ restored: from, files: written }, null, 2));
    else print(printable(to ? `restored ${from} to ${written.join(', ')}` : `restored ${from}`));
    if (start) {
      await startDomain(ctx.virsh, spec.vm);
      if (a.output !== 'json') print(printable(`started ${spec.vm}`));
    }
    return EXIT.ok;
  });
}

/** The --notify webhooks: each checked (a bad one is a usage error, never echoed whole), the secret read. */
async function notifierFor(specs: string[], secretFile: string | undefined, logger: import('./watch/log.js').Logger) {
  const { createNotifier, parseNotifyTarget } = await import('./watch/notify.js');
  const targets = specs.map((spec) => {
    const t = parseNotifyTarget(spec);
    if ('error' in t) throw new UserError(`--notify: ${t.error}`, EXIT.usage);
    return t;
  });
  const secret = secretFile
    ? (await readFile(secretFile, 'utf8').catch((e: NodeJS.ErrnoException) => Promise.reject(new UserError(`--notify-secret-file ${secretFile}: ${e.code ?? e.message}`)))).trim()
    : undefined;
  if (secret === '') throw new UserError(`--notify-secret-file ${secretFile} is empty`, EXIT.usage);
  return createNotifier({ targets, secret, logger });
}

export async function cmdWatch(a: Args): Promise<number> {
  const [{ startHttp }, { createLogger, defaultLogFormat }, { addDiskMetrics, createMetrics }, { WatchService }, { connect, resolveUri }] = await Promise.all([
    import('./watch/http.js'),
    import('./watch/log.js'),
    import('./watch/metrics.js'),
    import('./watch/service.js'),
    import('./tools/virsh.js'),
  ]);
  const w = a.watch;
  const [host, port] = [w.listen.replace(/:\d+$/, '').replace(/^\[|\]$/g, ''), Number(/:(\d+)$/.exec(w.listen)?.[1] ?? 'NaN')];
  if (!Number.isInteger(port)) throw new UserError(`--listen must be HOST:PORT (got ${w.listen})`, EXIT.usage);
  // Files the service will read later are checked now: a typo is a usage error, not a retry loop.
  for (const [option, file] of [
    ['--webhook-secret-file', w.webhookSecretFile],
    ['--git-token-file', w.tokenFile],
    ['--git-ssh-key', w.sshKeyFile],
    ['--known-hosts', w.knownHostsFile],
    ['--verify-commits', w.verifyCommits],
    ['--notify-secret-file', w.notifySecretFile],
    ['--notify-file', w.notifyFile],
  ] as const)
    if (file)
      await access(file, constants.R_OK).catch((e: NodeJS.ErrnoException) => {
        throw new UserError(`${option} ${file}: ${e.code === 'ENOENT' ? 'no such file' : e.code === 'EACCES' ? 'not readable' : e.message}`, EXIT.usage);
      });
  const secret = w.webhookSecretFile ? (await readFile(w.webhookSecretFile, 'utf8')).trim() : undefined;
  // An empty key signs nothing anyone could not forge.
  if (secret === '') throw new UserError(`--webhook-secret-file ${w.webhookSecretFile} is empty`, EXIT.usage);
  const releaseAgent = await (await import('./watch/agent-lock.js')).holdAgentLock(a.stateDir);
  const logger = createLogger(w.logFormat ?? defaultLogFormat());
  const stamp = (l: string) => logger.info(l);
  // Every series carries the host: a fleet's agents are told apart in one Prometheus.
  const metrics = createMetrics({ host: a.target.host });
  const fromFile = w.notifyFile
    ? (await readFile(w.notifyFile, 'utf8'))
        .split('\n')
        .map((l) => l.trim())
        .filter((l) => l && !l.startsWith('#'))
    : [];
  const hooks = [...w.notify, ...fromFile];
  const notifier = hooks.length ? await notifierFor(hooks, w.notifySecretFile, logger) : undefined;
  const service = new WatchService({
    files: a.files,
    target: a.target,
    git: w.git
      ? {
          url: w.git,
          ref: w.ref,
          subdir: w.path,
          access: { sshKeyFile: w.sshKeyFile, knownHostsFile: w.knownHostsFile, tokenFile: w.tokenFile, username: w.username },
          // Made anew at each start: a key removed from the file is no longer trusted.
          trust: w.verifyCommits ? await (await import('./tools/git.js')).trustKeys(w.verifyCommits, path.join(a.stateDir, 'git-trust')) : undefined,
        }
      : undefined,
    stateDir: a.stateDir,
    intervalSeconds: w.intervalSeconds,
    allowReplace: a.allowReplace,
    prune: a.prune,
    parallelism: a.parallelism,
    suspended: w.suspend,
    virsh: (yamlUri) => connect(resolveUri(a.connect, yamlUri)),
    metrics,
    logger,
    notify: notifier ? (e) => notifier.notify({ ...e, host: a.target.host }) : undefined,
  });
  addDiskMetrics(metrics.registry, () => service.diskStats());
  const server = await startHttp({ host, port, service, metrics, webhookSecret: secret, log: stamp });
  stamp(`watching ${service.status.source} every ${formatDuration(w.intervalSeconds)}; http://${w.listen}/`);
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
      void service
        .stop()
        .then(() => notifier?.stop())
        .then(releaseAgent)
        .then(() => server.close(() => resolve()));
      server.closeAllConnections();
    };
    process.on('SIGTERM', () => stop('SIGTERM'));
    process.on('SIGINT', () => stop('SIGINT'));
    // As daemons take a reload: reconcile now, without waiting for the interval.
    process.removeAllListeners('SIGHUP');
    process.on('SIGHUP', () => {
      stamp('SIGHUP: reconciling now');
      service.trigger('SIGHUP');
    });
  });
  stamp('stopped');
  return EXIT.ok;
}
