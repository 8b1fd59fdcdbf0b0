// `reconcile check`: qemu-img check on every declared image (files and file-pool volumes),
// with --repair for leaks (or everything) on images no running domain uses.
import pLimit from 'p-limit';
import { check as checkImage, type CheckResult } from '../tools/qemu-img.js';
import { runningDomainDisks } from '../tools/libvirt-domain.js';
import type { Virsh } from '../tools/virsh.js';
import type { PlanWithObservations } from '../reconcile/engine.js';
import type { DesiredState } from '../reconcile/model.js';
import { present } from '../providers/observe.js';

export interface CheckRow extends CheckResult {
  name: string;
  inUse: boolean;
  /** what happened: ok, leaks, corrupt, repaired, not checkable, skipped (in use), error */
  result: string;
}

/** Paths of every disk of every running domain, declared or not: repairs must never touch them. */
export async function runningDiskPaths(v: Virsh, volumePath: (pool: string, vol: string) => string | undefined): Promise<Set<string>> {
  const paths = new Set<string>();
  for (const d of await runningDomainDisks(v)) {
    const p = d.type === 'volume' ? volumePath(d.source.pool!, d.source.volume!) : (d.source.file ?? d.source.dev);
    if (p) paths.add(p);
  }
  return paths;
}

export async function checkImages(state: DesiredState, p: PlanWithObservations, opts: { repair?: 'leaks' | 'all'; parallelism: number; inUse: Set<string> }): Promise<CheckRow[]> {
  const targets: { name: string; path: string; driver?: string }[] = [];
  for (const spec of Object.values(state.images).sort((a, b) => a.name.localeCompare(b.name))) {
    if (spec.location.kind === 'path') {
      const obs = present(p.observed.files.get(spec.location.path));
      if (obs) targets.push({ name: spec.name, path: spec.location.path, driver: obs.driver });
    } else {
      const vol = present(p.observed.volumes.get(`${spec.location.pool}/${spec.location.volume}`));
      if (vol && vol.type === 'file') targets.push({ name: spec.name, path: vol.path, driver: vol.format });
    }
  }
  const limit = pLimit(Math.max(1, opts.parallelism));
  return Promise.all(
    targets.map((t) =>
      limit(async (): Promise<CheckRow> => {
        const inUse = opts.inUse.has(t.path);
        // A running guest's disk is checked read-only (force-share), never repaired.
        const repair = inUse ? undefined : opts.repair;
        const r = await checkImage(t.path, { repair, inUse, driver: t.driver });
        return { ...r, name: t.name, inUse, result: describe(r, inUse && !!opts.repair) };
      }),
    ),
  );
}

function describe(r: CheckResult, skippedRepair: boolean): string {
  if (r.error) return `error: ${r.error}`;
  if (!r.checkable) return 'not checkable (no metadata to check in this format)';
  const parts: string[] = [];
  if (r.corruptionsFixed) parts.push(`repaired ${r.corruptionsFixed} corruption(s)`);
  if (r.leaksFixed) parts.push(`repaired ${r.leaksFixed} leaked cluster(s)`);
  if (r.corruptions) parts.push(`${r.corruptions} corruption(s)${skippedRepair ? '' : ' (repair with --repair=all)'}`);
  if (r.leaks) parts.push(`${r.leaks} leaked cluster(s)${skippedRepair ? '' : ' (repair with --repair)'}`);
  if (r.checkErrors) parts.push(`${r.checkErrors} check error(s)`);
  if (skippedRepair && (r.corruptions || r.leaks)) parts.push('not repaired: a running domain uses it');
  return parts.length ? parts.join('; ') : 'ok';
}

/** Exit status: problems left after the run (or errors) fail it. */
export function checkFailed(rows: CheckRow[]): boolean {
  return rows.some((r) => r.error || r.corruptions > 0 || r.leaks > 0 || r.checkErrors > 0);
}
