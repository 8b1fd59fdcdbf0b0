// `apply PLAN.json` executes a saved plan only if it is exactly what `plan` makes of the
// inputs it embeds (the YAML texts, as Terraform's plan file embeds its configuration), for
// this state directory, against a host that has not moved since. A hand-written or edited
// plan is refused: the operations executed are always the ones recomputed here.
import path from 'node:path';
import { UserError, EXIT } from './errors.js';
import type { Action, Plan } from './plan.js';

export interface SavedPlan extends Plan {
  inputs: { path: string; text: string }[];
}

const isStr = (v: unknown): v is string => typeof v === 'string';

/** Structural check of a plan file; anything else is refused before it is looked at further. */
export function readSavedPlan(text: string, file: string): SavedPlan {
  let p: Partial<SavedPlan>;
  try {
    p = JSON.parse(text) as Partial<SavedPlan>;
  } catch (e) {
    throw new UserError(`${file} is not a plan saved by \`reconcile plan --out\`: ${(e as Error).message}`);
  }
  const problems: string[] = [];
  if (p.formatVersion !== 1) problems.push('formatVersion is not 1');
  if (!Array.isArray(p.actions)) problems.push('no actions list');
  if (!Array.isArray(p.refusals)) problems.push('no refusals list');
  if (!isStr(p.stateDir)) problems.push('no stateDir');
  if (typeof p.options?.allowReplace !== 'boolean' || typeof p.options?.prune !== 'boolean') problems.push('no options');
  if (!p.observed || typeof p.observed !== 'object') problems.push('no observations');
  if (!Array.isArray(p.inputs) || !p.inputs.every((i) => isStr(i?.path) && isStr(i?.text))) problems.push('no embedded inputs (made by an older version: run `reconcile plan --out` again)');
  if (problems.length) throw new UserError(`${file} is not a plan saved by \`reconcile plan --out\` (${problems.join('; ')})`);
  return p as SavedPlan;
}

export function checkStateDir(saved: Plan, stateDir: string, file: string): void {
  if (path.resolve(saved.stateDir) !== path.resolve(stateDir)) {
    throw new UserError(`${file} was made for state directory ${saved.stateDir}; this apply uses ${stateDir} (--state-dir). Nothing was applied`, EXIT.error, { reason: 'other-state-dir' });
  }
}

const essence = (a: Action) => JSON.stringify({ id: a.id, kind: a.kind, destructive: a.destructive, dependsOn: a.dependsOn, op: a.op });

/** Refuses unless the recomputed plan is the saved one: same observations, same operations. */
export function checkSameAsFresh(saved: Plan, fresh: Plan, file: string): void {
  const keys = new Set([...Object.keys(saved.observed), ...Object.keys(fresh.observed)]);
  const moved = [...keys].filter((k) => saved.observed[k] !== fresh.observed[k]).map((k) => k.replace(/^file:/, ''));
  if (moved.length) {
    throw new UserError(`the host changed since ${file} was made (${moved.join(', ')}); nothing was applied. Run \`reconcile plan\` again`, EXIT.error, { reason: 'stale-plan', moved });
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
    throw new UserError(`${file} does not match what \`reconcile plan\` makes of the YAML it embeds (${ids.join(', ') || 'connection'}); was it edited? Nothing was applied`, EXIT.error, { reason: 'tampered-plan', actions: ids });
  }
}
