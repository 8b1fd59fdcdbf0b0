// `reconcile show`: what exists on the host for each declared object, whether it is in
// sync, and how full each pool is.
import { publishId } from './providers/publish/diff.js';
import type { PlanWithObservations } from './reconcile/engine.js';
import { imageRecordFor, recordKey, sameFile, volumeIsOurs } from './reconcile/inventory.js';
import { LUN_POOLS, type DesiredState } from './reconcile/model.js';
import { formatSize } from './reconcile/sizes.js';
import { columns, renderTable } from './table.js';
import { printable } from './text.js';
import { present } from './providers/observe.js';
import { diskSourceText } from './tools/libvirt-domain.js';
import { formatOfDriver } from './providers/image/formats.js';

export interface SecretStatus {
  name: string;
  usage: string;
  uuid?: string;
  /** foreign: a secret of its usage exists that reconcile neither defined nor was told to adopt */
  owner: 'created' | 'adopted' | 'foreign' | 'none';
  status: string;
  detail: string;
}

export interface ImageStatus {
  name: string;
  where: string;
  exists: boolean;
  format?: string;
  virtualSize?: number;
  allocated?: number;
  /** foreign: something is there that reconcile neither made nor was told to adopt (left alone) */
  owner: 'created' | 'adopted' | 'foreign' | 'none';
  status: string;
  detail: string;
}

/** A publish target of an image: in sync (holds this image), pending (an upload is due), failed (the last upload failed), refused. */
export interface PublishStatus {
  image: string;
  to: string;
  status: 'in-sync' | 'pending' | 'failed' | 'refused' | 'unknown';
  detail: string;
  /** when reconcile last uploaded it */
  uploadedAt?: string;
}

export interface PoolStatus {
  name: string;
  type: string;
  exists: boolean;
  active: boolean;
  autostart: boolean;
  capacity?: number;
  allocation?: number;
  available?: number;
  usedPercent?: number;
  capacityAlert?: number;
  overAlert: boolean;
  volumes?: number;
  owner: 'created' | 'adopted' | 'none';
  status: string;
  detail: string;
}

function statusOf(p: PlanWithObservations, id: string): { status: string; detail: string } {
  const action = p.plan.actions.find((a) => a.id === id);
  const refusal = p.plan.refusals.find((r) => r.id === id);
  const waiting = p.plan.waiting?.find((w) => w.id === id);
  if (!refusal && waiting)
    return { status: 'waiting', detail: `${waiting.kind} waits for a maintenance window${waiting.opensAt ? ` (opens at ${waiting.opensAt})` : ''}: ${waiting.reason}` };
  const status = refusal ? 'refused' : !action ? 'unknown' : action.kind === 'no-op' ? 'in-sync' : action.kind === 'create' ? 'missing' : 'drifted';
  return { status, detail: refusal?.message ?? (action && action.kind !== 'no-op' ? action.reason : '') };
}

export function publishStatuses(state: DesiredState, p: PlanWithObservations): PublishStatus[] {
  return Object.values(state.images)
    .sort((a, b) => a.name.localeCompare(b.name))
    .flatMap((spec) =>
      spec.publish.map((t): PublishStatus => {
        const id = publishId(t.to);
        const action = p.plan.actions.find((a) => a.id === id);
        const refusal = p.plan.refusals.find((r) => r.id === id);
        const rec = p.inventory.objects[recordKey({ type: 'publish', to: t.to })];
        const failed = rec?.type === 'publish' ? rec.lastError : undefined;
        const status = refusal ? 'refused' : !action ? 'unknown' : action.kind === 'no-op' ? 'in-sync' : failed ? 'failed' : 'pending';
        const detail = refusal?.message ?? (status === 'failed' ? `${failed!.at}: ${failed!.message}` : action && action.kind !== 'no-op' ? action.reason : '');
        return { image: spec.name, to: t.to, status, detail, uploadedAt: rec?.type === 'publish' && rec.sha256 ? rec.uploadedAt : undefined };
      }),
    );
}

export function imageStatuses(state: DesiredState, p: PlanWithObservations): ImageStatus[] {
  return Object.values(state.images)
    .sort((a, b) => a.name.localeCompare(b.name))
    .map((spec) => {
      const s = statusOf(p, `images.${spec.name}`);
      if (spec.location.kind === 'path') {
        const path = spec.location.path;
        const obs = present(p.observed.files.get(path));
        const rec = imageRecordFor(p.inventory, path, obs?.file, obs?.symlink !== undefined);
        return {
          name: spec.name,
          where: path,
          exists: !!obs,
          format: obs ? formatOfDriver(obs.driver) : undefined,
          virtualSize: obs?.virtualSize,
          allocated: obs?.actualSize,
          owner: obs && rec && sameFile(rec, obs.file) ? 'created' : obs ? (spec.adopt ? 'adopted' : 'foreign') : 'none',
          ...s,
        };
      }
      const { pool, volume } = spec.location;
      const obs = present(p.observed.volumes.get(`${pool}/${volume}`));
      const rec = p.inventory.objects[recordKey({ type: 'volume', pool, volume })];
      return {
        name: spec.name,
        where: `${pool}/${volume}`,
        exists: !!obs,
        format: obs?.format === undefined ? undefined : formatOfDriver(obs.format),
        virtualSize: obs?.capacity,
        allocated: obs?.allocation,
        owner:
          obs && rec?.type === 'volume' && volumeIsOurs(rec, obs)
            ? 'created'
            : obs
              ? spec.adopt || LUN_POOLS.includes(state.pools[pool]?.type ?? 'dir')
                ? 'adopted'
                : 'foreign'
              : 'none',
        ...s,
      };
    });
}

export function poolStatuses(state: DesiredState, p: PlanWithObservations): PoolStatus[] {
  return Object.values(state.pools)
    .sort((a, b) => a.name.localeCompare(b.name))
    .map((spec) => {
      const obs = present(p.observed.pools.get(spec.name));
      const used = obs?.capacity ? Math.round(((obs.allocation ?? 0) / obs.capacity) * 1000) / 10 : undefined;
      const ours = !!p.inventory.objects[recordKey({ type: 'pool', name: spec.name })];
      return {
        name: spec.name,
        type: spec.type,
        exists: !!obs,
        active: !!obs?.active,
        autostart: !!obs?.autostart,
        capacity: obs?.capacity,
        allocation: obs?.allocation,
        available: obs?.available,
        usedPercent: used,
        capacityAlert: spec.capacityAlert,
        overAlert: used !== undefined && spec.capacityAlert !== undefined && used >= spec.capacityAlert,
        volumes: obs?.volumes?.size,
        owner: obs ? (ours ? 'created' : 'adopted') : 'none',
        ...statusOf(p, `pools.${spec.name}`),
      };
    });
}

export interface VmStatus {
  name: string;
  exists: boolean;
  state: string;
  disks: { target: string; source: string; bus: string; cache?: string; io?: string; discard?: string; ours: boolean }[];
  owner: 'created' | 'adopted' | 'none';
  pendingRestart: string[];
  status: string;
  detail: string;
}

export function vmStatuses(state: DesiredState, p: PlanWithObservations): VmStatus[] {
  return Object.values(state.vms)
    .sort((a, b) => a.name.localeCompare(b.name))
    .map((vm) => {
      const dom = present(p.observed.domains.get(vm.name));
      const s = statusOf(p, `vms.${vm.name}`);
      const pending = p.pending[vm.name] ?? [];
      return {
        name: vm.name,
        exists: !!dom,
        state: dom?.state ?? 'absent',
        disks: (dom?.persistent ?? []).map((d) => ({
          target: d.target,
          source: diskSourceText(d),
          bus: d.bus,
          cache: d.cache,
          io: d.io,
          discard: d.discard,
          ours: !!dom?.ownership.disks.includes(d.target),
        })),
        owner: dom ? (dom.ownership.created ? 'created' : 'adopted') : 'none',
        pendingRestart: pending,
        status: s.status === 'in-sync' && pending.length ? 'pending-restart' : s.status,
        detail: s.detail || (pending.length ? pending.join(', ') : ''),
      };
    });
}

export function secretStatuses(state: DesiredState, p: PlanWithObservations): SecretStatus[] {
  return Object.values(state.secrets)
    .sort((a, b) => a.name.localeCompare(b.name))
    .map((spec) => {
      const found = p.observed.secrets?.find((s) => s.usage === spec.usage && s.usageId === spec.usageId);
      const rec = p.inventory.objects[recordKey({ type: 'secret', name: spec.name })];
      const ours = rec?.type === 'secret' && rec.uuid === found?.uuid;
      return {
        name: spec.name,
        usage: `${spec.usage} ${spec.usageId}`,
        uuid: found?.uuid,
        owner: !found ? 'none' : ours ? (rec.adopted ? 'adopted' : 'created') : 'foreign',
        ...statusOf(p, `secrets.${spec.name}`),
      };
    });
}

/** Capacity warnings for plan and apply output (and, later, metrics). */
export function capacityWarnings(pools: PoolStatus[]): string[] {
  return pools
    .filter((x) => x.overAlert)
    .map(
      (x) =>
        `warning: pool ${x.name} is ${x.usedPercent}% allocated, over its capacityAlert of ${x.capacityAlert}% (${formatSize(x.available ?? 0).replace(/ \(.*\)$/, '')} available)`,
    );
}

const size = (n?: number) => (n === undefined ? '-' : formatSize(n).replace(/ \(.*\)$/, ''));

export function renderShow(pools: PoolStatus[], images: ImageStatus[], vms: VmStatus[], notes: string[], secrets: SecretStatus[] = [], published: PublishStatus[] = []): string {
  const lines: string[] = [];
  if (secrets.length) {
    const cols = columns(['SECRET', 'USAGE', 'UUID', 'OWNER', 'STATUS']);
    lines.push(
      ...renderTable(
        cols,
        secrets.map((s) => [s.name, s.usage, s.uuid ?? '-', s.owner, s.status + (s.detail ? `: ${s.detail}` : '')]),
      ),
      '',
    );
  }
  if (pools.length) {
    const cols = columns(
      ['POOL', 'TYPE', 'STATE', 'AUTOSTART', 'CAPACITY', 'ALLOCATION', 'AVAILABLE', 'USED', 'VOLUMES', 'OWNER', 'STATUS'],
      ['CAPACITY', 'ALLOCATION', 'AVAILABLE', 'VOLUMES'],
    );
    const rows = pools.map((x) => {
      const bar = x.usedPercent === undefined ? '-' : `${x.usedPercent}%${x.capacityAlert !== undefined ? ` (alert ${x.capacityAlert}%)` : ''}${x.overAlert ? ' OVER' : ''}`;
      return [
        x.name,
        x.type,
        x.exists ? (x.active ? 'active' : 'inactive') : 'absent',
        x.exists ? (x.autostart ? 'yes' : 'no') : '-',
        size(x.capacity),
        size(x.allocation),
        size(x.available),
        bar,
        x.volumes === undefined ? '-' : String(x.volumes),
        x.owner,
        x.status + (x.detail ? `: ${x.detail}` : ''),
      ];
    });
    lines.push(...renderTable(cols, rows), '');
  }
  if (images.length) {
    const cols = columns(['IMAGE', 'WHERE', 'FORMAT', 'SIZE', 'ALLOCATED', 'OWNER', 'STATUS'], ['SIZE', 'ALLOCATED']);
    const rows = images.map((i) => [i.name, i.where, i.format ?? '-', size(i.virtualSize), size(i.allocated), i.owner, i.status + (i.detail ? `: ${i.detail}` : '')]);
    lines.push(...renderTable(cols, rows));
  }
  if (published.length) {
    const cols = columns(['IMAGE', 'PUBLISHED TO', 'UPLOADED', 'STATUS']);
    const rows = published.map((x) => [x.image, x.to, x.uploadedAt ?? '-', x.status + (x.detail ? `: ${x.detail}` : '')]);
    lines.push('', ...renderTable(cols, rows));
  }
  if (vms.length) {
    const cols = columns(['VM', 'STATE', 'OWNER', 'DISK', 'SOURCE', 'BUS', 'CACHE', 'IO', 'DISCARD', 'ATTACHED', 'STATUS']);
    const rows: string[][] = [];
    for (const v of vms) {
      const status = v.status + (v.detail ? `: ${v.detail}` : '');
      if (!v.disks.length) rows.push([v.name, v.state, v.owner, '-', '-', '-', '-', '-', '-', '-', status]);
      for (const [i, d] of v.disks.entries())
        rows.push([
          i ? '' : v.name,
          i ? '' : v.state,
          i ? '' : v.owner,
          d.target,
          d.source,
          d.bus,
          d.cache ?? 'default',
          d.io ?? 'default',
          d.discard ?? 'default',
          d.ours ? 'reconcile' : 'adopted',
          i ? '' : status,
        ]);
    }
    lines.push('', ...renderTable(cols, rows));
  }
  const warnings = capacityWarnings(pools);
  if (warnings.length || notes.length) lines.push('', ...warnings.map(printable), ...notes.map(printable));
  return lines.join('\n').trim();
}
