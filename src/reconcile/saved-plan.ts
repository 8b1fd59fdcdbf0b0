// `apply PLAN.json` executes a saved plan only if it is exactly what `plan` makes of the
// inputs it embeds (the YAML texts, as Terraform's plan file embeds its configuration), for
// this state directory, against a host that has not moved since. A hand-written or edited
// plan is refused: the operations executed are always the ones recomputed here.
//
// The file is a versioned format of its own, validated on load: each action's operation is
// saved as a digest only, so nothing in it depends on a kind's internal types, and nothing
// in it is ever executed as written.
import { createHash } from 'node:crypto';
import { createRequire } from 'node:module';
import path from 'node:path';
import type { Ajv } from 'ajv';
import { UserError, EXIT } from './errors.js';
import type { HostTarget } from './hosts.js';
import type { Action, Plan, Refusal, Waiting } from './plan.js';

export const PLAN_FORMAT = 'virt-reconcile-plan';
export const PLAN_FORMAT_VERSION = 2;

/** An action as saved: everything but its operation, which is kept as a digest (sha256 of it). */
export type SavedAction = Omit<Action, 'op'> & { digest: string };

export interface SavedPlan {
  format: typeof PLAN_FORMAT;
  formatVersion: typeof PLAN_FORMAT_VERSION;
  createdAt: string;
  stateDir: string;
  connection?: string;
  /** outsideWindow: made without waiting for a maintenance window */
  options: { allowReplace: boolean; prune: boolean; outsideWindow?: boolean };
  observed: Record<string, string>;
  actions: SavedAction[];
  refusals: Refusal[];
  notes: string[];
  /** held back until a maintenance window opens */
  waiting?: Waiting[];
  /** the YAML files the plan was made from */
  inputs: { path: string; text: string }[];
  /** the host it was made for (--host, --label): the files of other hosts in inputs stay out */
  host?: HostTarget;
}

const digest = (op: unknown) => createHash('sha256').update(JSON.stringify(op)).digest('hex');

/** The plan as saved by `plan --out` (and printed by `plan -o json`, without inputs). */
export function toSavedPlan(plan: Plan, inputs: { path: string; text: string }[], host?: HostTarget): SavedPlan {
  return {
    format: PLAN_FORMAT,
    formatVersion: PLAN_FORMAT_VERSION,
    createdAt: plan.createdAt,
    stateDir: plan.stateDir,
    ...(plan.connection ? { connection: plan.connection } : {}),
    options: plan.options,
    observed: plan.observed,
    actions: plan.actions.map(({ op, ...a }) => ({ ...a, digest: digest(op) })),
    refusals: plan.refusals,
    notes: plan.notes,
    ...(plan.waiting?.length ? { waiting: plan.waiting } : {}),
    inputs,
    ...(host ? { host } : {}),
  };
}

const str = { type: 'string' } as const;
const SCHEMA = {
  type: 'object',
  required: ['format', 'formatVersion', 'createdAt', 'stateDir', 'options', 'observed', 'actions', 'refusals', 'notes', 'inputs'],
  additionalProperties: false,
  properties: {
    format: { const: PLAN_FORMAT },
    formatVersion: { const: PLAN_FORMAT_VERSION },
    createdAt: str,
    stateDir: str,
    connection: str,
    options: {
      type: 'object',
      required: ['allowReplace', 'prune'],
      additionalProperties: false,
      properties: { allowReplace: { type: 'boolean' }, prune: { type: 'boolean' }, outsideWindow: { type: 'boolean' } },
    },
    observed: { type: 'object', additionalProperties: str },
    actions: {
      type: 'array',
      items: {
        type: 'object',
        required: ['id', 'resource', 'kind', 'code', 'reason', 'destructive', 'changes', 'dependsOn', 'digest'],
        additionalProperties: false,
        properties: {
          id: str,
          resource: str,
          kind: str,
          code: str,
          reason: str,
          destructive: { type: 'boolean' },
          disruptive: { type: 'boolean' },
          changes: { type: 'array', items: { type: 'object', required: ['field', 'from', 'to'], additionalProperties: false, properties: { field: str, from: str, to: str } } },
          dependsOn: { type: 'array', items: str },
          digest: { type: 'string', pattern: '^[0-9a-f]{64}$' },
        },
      },
    },
    refusals: { type: 'array', items: { type: 'object', required: ['id', 'message'], additionalProperties: false, properties: { id: str, message: str } } },
    notes: { type: 'array', items: str },
    waiting: {
      type: 'array',
      items: {
        type: 'object',
        required: ['id', 'kind', 'reason', 'destructive'],
        additionalProperties: false,
        properties: { id: str, kind: str, reason: str, destructive: { type: 'boolean' }, because: { type: 'array', items: str }, opensAt: str },
      },
    },
    host: {
      type: 'object',
      required: ['host', 'labels'],
      additionalProperties: false,
      properties: { host: str, labels: { type: 'object', additionalProperties: str } },
    },
    inputs: { type: 'array', items: { type: 'object', required: ['path', 'text'], additionalProperties: false, properties: { path: str, text: str } } },
  },
};

let validate: ReturnType<Ajv['compile']> | undefined;

/** Reads a plan file; anything but a well-formed plan of this format is refused before it is looked at further. */
export function readSavedPlan(text: string, file: string): SavedPlan {
  let p: unknown;
  try {
    p = JSON.parse(text);
  } catch (e) {
    throw new UserError(`${file} is not a plan saved by \`reconcile plan --out\`: ${(e as Error).message}`);
  }
  const version = (p as { formatVersion?: unknown } | null)?.formatVersion;
  if (typeof version === 'number' && version !== PLAN_FORMAT_VERSION) {
    throw new UserError(`${file} is a plan of format version ${version}; this version reads version ${PLAN_FORMAT_VERSION}. Run \`reconcile plan --out\` again`);
  }
  // ajv's compiler is loaded only when a saved plan is read: a plain plan or apply never pays for it.
  const { Ajv: AjvClass } = createRequire(import.meta.url)('ajv') as { Ajv: typeof Ajv };
  validate ??= new AjvClass({ allErrors: true }).compile(SCHEMA);
  if (!validate(p)) {
    const problems = (validate.errors ?? []).map((e) =>
      e.keyword === 'required'
        ? `${e.instancePath || ''}${e.instancePath ? ': ' : ''}no ${(e.params as { missingProperty: string }).missingProperty}`
        : `${e.instancePath || '(top)'}: ${e.message ?? 'invalid'}`,
    );
    throw new UserError(`${file} is not a plan saved by \`reconcile plan --out\` (${[...new Set(problems)].slice(0, 8).join('; ')})`);
  }
  return p as SavedPlan;
}

export function checkStateDir(saved: SavedPlan, stateDir: string, file: string): void {
  if (path.resolve(saved.stateDir) !== path.resolve(stateDir)) {
    throw new UserError(`${file} was made for state directory ${saved.stateDir}; this apply uses ${stateDir} (--state-dir). Nothing was applied`, EXIT.error, {
      reason: 'other-state-dir',
    });
  }
}

// Everything a person reviewed (reason, code, per-field changes) as well as what runs (digest).
const essence = (a: SavedAction) =>
  JSON.stringify({
    id: a.id,
    resource: a.resource,
    kind: a.kind,
    code: a.code,
    reason: a.reason,
    destructive: a.destructive,
    changes: a.changes,
    dependsOn: a.dependsOn,
    digest: a.digest,
  });

/** Refuses unless the recomputed plan is the saved one: same observations, same operations. */
export function checkSameAsFresh(saved: SavedPlan, freshPlan: Plan, file: string): void {
  const fresh = toSavedPlan(freshPlan, []);
  const keys = new Set([...Object.keys(saved.observed), ...Object.keys(fresh.observed)]);
  const moved = [...keys].filter((k) => saved.observed[k] !== fresh.observed[k]).map((k) => k.replace(/^file:/, ''));
  if (moved.length) {
    throw new UserError(`the host changed since ${file} was made (${moved.join(', ')}); nothing was applied. Run \`reconcile plan\` again`, EXIT.error, {
      reason: 'stale-plan',
      moved,
    });
  }
  const a = saved.actions.map(essence);
  const b = fresh.actions.map(essence);
  const differ = a.length !== b.length || a.some((x, i) => x !== b[i]) || saved.connection !== fresh.connection;
  if (differ) {
    const ids = [...new Set([...saved.actions, ...fresh.actions].map((x) => x.id))].filter((id) => {
      const s = saved.actions.find((x) => x.id === id);
      const f = fresh.actions.find((x) => x.id === id);
      return !s || !f || essence(s) !== essence(f);
    });
    throw new UserError(
      `${file} does not match what \`reconcile plan\` makes of the YAML it embeds (${ids.join(', ') || 'connection'}); was it edited? Nothing was applied`,
      EXIT.error,
      { reason: 'tampered-plan', actions: ids },
    );
  }
}
