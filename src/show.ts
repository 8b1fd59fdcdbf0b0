// `reconcile show`: what exists on the host for each declared object, and whether it is in sync.
import { recordKey } from './reconcile/inventory.js';
import type { PlanWithObservations } from './reconcile/engine.js';
import type { DesiredState } from './reconcile/model.js';
import { formatSize } from './reconcile/sizes.js';

export interface ImageStatus {
  name: string;
  path: string;
  exists: boolean;
  format?: string;
  virtualSize?: number;
  allocated?: number;
  owner: 'created' | 'adopted' | 'none';
  status: string;
  detail: string;
}

export function imageStatuses(state: DesiredState, p: PlanWithObservations): ImageStatus[] {
  const out: ImageStatus[] = [];
  for (const spec of Object.values(state.images).sort((a, b) => a.name.localeCompare(b.name))) {
    const id = `images.${spec.name}`;
    const path = spec.location.kind === 'path' ? spec.location.path : `pool ${spec.location.pool}`;
    const obs = p.observed.get(path) ?? undefined;
    const rec = p.inventory.objects[recordKey({ type: 'image', path })];
    const action = p.plan.actions.find((a) => a.id === id);
    const refusal = p.plan.refusals.find((r) => r.id === id);
    const status = refusal ? 'refused' : !action ? 'unknown' : action.kind === 'no-op' ? 'in-sync' : action.kind === 'create' ? 'missing' : 'drifted';
    out.push({
      name: spec.name,
      path,
      exists: !!obs,
      format: obs ? (obs.driver === 'vpc' ? 'vhd' : obs.driver) : undefined,
      virtualSize: obs?.virtualSize,
      allocated: obs?.actualSize,
      owner: obs && rec && rec.ino === obs.file.ino ? 'created' : obs ? 'adopted' : 'none',
      status,
      detail: refusal?.message ?? (action && action.kind !== 'no-op' ? action.reason : ''),
    });
  }
  return out;
}

export function renderShow(images: ImageStatus[], notes: string[]): string {
  const rows = [['IMAGE', 'PATH', 'FORMAT', 'SIZE', 'ALLOCATED', 'OWNER', 'STATUS']];
  for (const i of images) {
    rows.push([
      i.name, i.path, i.format ?? '-', i.virtualSize !== undefined ? formatSize(i.virtualSize).replace(/ \(.*\)$/, '') : '-',
      i.allocated !== undefined ? formatSize(i.allocated).replace(/ \(.*\)$/, '') : '-', i.owner, i.status + (i.detail ? `: ${i.detail}` : ''),
    ]);
  }
  const widths = rows[0]!.map((_, c) => Math.max(...rows.map((r) => r[c]!.length)));
  const lines = rows.map((r) => r.map((cell, c) => (c === r.length - 1 ? cell : cell.padEnd(widths[c]!))).join('  '));
  if (notes.length) lines.push('', ...notes);
  return lines.join('\n');
}
