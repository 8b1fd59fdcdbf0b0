// The storage of declared VMs vs what libvirt reports for each domain: attach declared
// disks, enforce driver type, cache, io, discard, bus and readonly on them, detach disks
// reconcile attached that left the YAML, define missing domains that have `create:`.
// Changes go to the persistent definition; a running domain reports pending restart for
// whatever it cannot take live.
import { DRIVER } from '../image/formats.js';
import type { ObservedImage } from '../image/observe.js';
import {
  DEFAULT_PORT,
  diskSourceText,
  IDENTITY_FIELDS,
  networkUrl,
  type DiskDevice,
  type DomainCapabilities,
  type ObservedDomain,
  type Ownership,
} from '../../tools/libvirt-domain.js';
import { VOL_FORMAT, type ObservedVolume } from '../../tools/libvirt-volume.js';
import { created, reasonOf } from '../common/decisions.js';
import type { KvmAccess } from './kvm-access.js';
import { recordKey, type Inventory, type InventoryRecord } from '../../reconcile/inventory.js';
import { imageSecretUsage, type DesiredState, type DiskSpec, type VmSpec } from '../../reconcile/model.js';
import type { DomainOp } from './ops.js';
import { NO_OP, orphanId, type NoOp, type Action, type Change, type Refusal } from '../../reconcile/plan.js';

export interface VmDiff {
  actions: Action<DomainOp | NoOp>[];
  refusals: Refusal[];
  notes: string[];
  /** per VM: what a running domain keeps until it restarts */
  pending: Record<string, string[]>;
}

import type { DiskStep } from './ops.js';
import { unobservable, type Observed } from '../observe.js';
export type { DiskStep };
export { targetName } from './targets.js';
import { targetName } from './targets.js';

function sameSource(a: DiskDevice, b: DiskDevice): boolean {
  if (a.type === 'network' || b.type === 'network') return a.type === b.type && networkUrl(a) === networkUrl(b);
  if (a.type === 'volume' || b.type === 'volume') return a.source.pool === b.source.pool && a.source.volume === b.source.volume;
  return (a.source.file ?? a.source.dev) === (b.source.file ?? b.source.dev);
}

const describeSource = diskSourceText;

/** A disk as a plan line shows it: source and every policy it sets. */
function diskSummary(d: DiskDevice): string {
  const policy = [
    d.device === 'cdrom' && 'cdrom',
    d.driverType,
    d.bus,
    d.cache && `cache ${d.cache}`,
    d.io && `io ${d.io}`,
    d.discard && `discard ${d.discard}`,
    d.readonly && 'readonly',
    ...IDENTITY_FIELDS.map((f) => d[f] !== undefined && `${f} ${d[f]}`),
  ].filter(Boolean);
  return `${describeSource(d)} (${policy.join(', ')})`;
}

/** Attribute differences a disk would need, for the declared (non-undefined) values only. */
function attributeChanges(want: DiskDevice, have: DiskDevice): Change[] {
  const ch: Change[] = [];
  const cmp = (field: keyof DiskDevice) => {
    const w = want[field];
    const h = have[field];
    if (w !== undefined && String(w) !== String(h ?? 'default'))
      ch.push({ field: `${want.target} ${field === 'driverType' ? 'format' : field}`, from: String(h ?? 'default'), to: String(w) });
  };
  for (const f of ['device', 'driverType', 'bus', 'cache', 'io', 'discard', 'readonly'] as const) cmp(f);
  // An encrypted image's secret (by usage; one named by uuid in a definition made by hand is not compared).
  const enc = (d: DiskDevice) => (d.encryption ? `${d.encryption.format} with secret ${d.encryption.secretUsage ?? d.encryption.secretUuid}` : 'none');
  if ((want.encryption || have.encryption) && !(have.encryption?.secretUuid && !have.encryption.secretUsage && want.encryption) && enc(want) !== enc(have))
    ch.push({ field: `${want.target} encryption`, from: enc(have), to: enc(want) });
  // A network disk's login: user and the secret it names (by usage).
  const auth = (d: DiskDevice) => (d.source.auth ? `${d.source.auth.username} with ${d.source.auth.secretType} secret ${d.source.auth.secretUsage}` : 'none');
  if (want.type === 'network' && have.type === 'network' && auth(want) !== auth(have)) ch.push({ field: `${want.target} auth`, from: auth(have), to: auth(want) });
  // Identity the guest reads: declared values are restored when edited away (drift healing);
  // a wwn is compared as a number (libvirt keeps the spelling it was given).
  for (const f of IDENTITY_FIELDS) {
    const w = want[f];
    const h = have[f];
    const norm = (v: string | undefined) => (f === 'wwn' ? v?.toLowerCase().replace(/^0x/, '') : v);
    if (w !== undefined && norm(w) !== norm(h)) ch.push({ field: `${want.target} ${f}`, from: h ?? 'none', to: w });
  }
  return ch;
}

export function diffVms(input: {
  state: DesiredState;
  domains: Map<string, Observed<ObservedDomain>>;
  caps: Map<string, DomainCapabilities>;
  files: Map<string, Observed<ObservedImage>>;
  volumes: Map<string, Observed<ObservedVolume>>;
  inventory: Inventory;
  prune: boolean;
  /** whether new domains can use KVM, and why not */
  kvm: KvmAccess;
  /** domain records the YAML no longer declares (inventory minus desired) */
  orphans: [string, InventoryRecord][];
  /** paths that could not be observed, with why */
  errors: Map<string, string>;
}): VmDiff {
  const { state, domains, caps, files } = input;
  const out: VmDiff = { actions: [], refusals: [], notes: [], pending: {} };

  for (const vm of Object.values(state.vms).sort((a, b) => a.name.localeCompare(b.name))) {
    const id = `vms.${vm.name}`;
    const found = domains.get(vm.name);
    if (found === undefined) continue; // not observed: libvirt said why, and the plan fails with it
    const dom = found.exists ? found : null;
    if (dom === null && !vm.create) {
      out.refusals.push({ id, message: `${vm.origin}: domain ${vm.name} does not exist; add create: { memory, vcpus } to define it, or define it yourself` });
      continue;
    }
    const createVirtType = input.kvm.virtType;
    // Bus support is the same for kvm and qemu domains of one QEMU: one answer serves both.
    const cap = caps.get(dom?.virtType ?? createVirtType) ?? caps.get(createVirtType);
    const resolved = resolveDisks(vm, dom, state, files, input.errors, cap, out, id);
    if (!resolved) continue;
    // After the images it attaches and the secrets its network disks log in with.
    const dependsOn = [
      ...vm.disks.filter((d) => d.image).map((d) => `images.${d.image}`),
      ...vm.disks.flatMap((d) => (d.network?.auth ? [`secrets.${d.network.auth.secret}`] : [])),
      // An encrypted image's secret (declared with its usage, or kept by reconcile) is set first.
      ...vm.disks.flatMap((d) => {
        const img = d.image ? state.images[d.image] : undefined;
        const p = img?.encryption ? imageSecretUsage(state, img) : undefined;
        if (!p) return [];
        const s = Object.values(state.secrets).find((x) => x.usage === 'volume' && x.usageId === p);
        return s ? [`secrets.${s.name}`] : [];
      }),
    ];

    if (dom === null) {
      const ownership: Ownership = { created: true, disks: resolved.map((d) => d.target).sort() };
      if (!input.kvm.usable) out.notes.push(`${id}: defined as qemu (TCG, no hardware acceleration): ${input.kvm.reason}${input.kvm.fix ? `; to use KVM, ${input.kvm.fix}` : ''}`);
      out.actions.push({
        id,
        resource: 'domain',
        kind: 'create',
        code: 'new',
        destructive: false,
        dependsOn,
        changes: [
          ...created({ type: createVirtType, memory: `${Math.round(vm.create!.memory / 1024 / 1024)} MiB`, vcpus: vm.create!.vcpus }),
          ...resolved.map((d) => ({ field: d.target, from: '', to: diskSummary(d) })),
        ],
        reason: `new domain (${createVirtType}, ${Math.round(vm.create!.memory / 1024 / 1024)} MiB, ${vm.create!.vcpus} vCPU) with ${resolved.length} disk(s): ${resolved.map((d) => `${d.target} ${describeSource(d)}`).join(', ')}`,
        op: {
          type: 'domain.define',
          name: vm.name,
          definition: { name: vm.name, virtType: createVirtType, arch: cap?.arch ?? 'x86_64', memory: vm.create!.memory, vcpus: vm.create!.vcpus, disks: resolved, ownership },
        },
      });
      continue;
    }

    const steps: DiskStep[] = [];
    const changes: Change[] = [];
    const owned = new Set(dom.ownership.disks);
    const pending: string[] = [];
    for (const want of resolved) {
      const have = dom.persistent.find((d) => d.target === want.target);
      if (!have) {
        steps.push({ verb: 'attach-device', disk: want });
        changes.push({ field: `${want.target}`, from: 'absent', to: diskSummary(want) });
        owned.add(want.target);
        continue;
      }
      if (!sameSource(want, have)) {
        if (!owned.has(want.target)) {
          out.refusals.push({
            id,
            message: `${vm.origin}: target ${want.target} of domain ${vm.name} holds ${describeSource(have)}, which reconcile did not attach; declare another target or remove that disk yourself`,
          });
          changes.length = 0;
          steps.length = 0;
          break;
        }
        // Media in a CD-ROM drive is changed in place (the guest sees the tray eject and close,
        // live too); a disk is detached and the new one attached.
        if (want.device === 'cdrom' && have.device === 'cdrom' && want.bus === have.bus) steps.push({ verb: 'update-device', disk: want });
        else steps.push({ verb: 'detach-device', disk: have }, { verb: 'attach-device', disk: want });
        changes.push({ field: `${want.target} source`, from: describeSource(have), to: describeSource(want) });
        continue;
      }
      const attrs = attributeChanges(want, have);
      if (!attrs.length) continue;
      const merged: DiskDevice = { ...have, ...Object.fromEntries(Object.entries(want).filter(([, v]) => v !== undefined)) } as DiskDevice;
      if (want.bus !== have.bus || want.device !== have.device) steps.push({ verb: 'detach-device', disk: have }, { verb: 'attach-device', disk: merged });
      else steps.push({ verb: 'update-device', disk: merged });
      changes.push(...attrs);
    }
    if (out.refusals.some((r) => r.id === id)) continue;
    // Disks reconcile attached that are no longer declared go; adopted ones never do.
    for (const t of dom.ownership.disks) {
      if (resolved.some((d) => d.target === t)) continue;
      const have = dom.persistent.find((d) => d.target === t);
      owned.delete(t);
      if (!have) continue;
      steps.push({ verb: 'detach-device', disk: have });
      changes.push({ field: t, from: describeSource(have), to: 'detached' });
    }
    if (dom.running && dom.live) {
      for (const want of resolved) {
        const live = dom.live.find((d) => d.target === want.target);
        if (!live) {
          // Being attached now (hot-plug) if it is not yet in the definition; otherwise an
          // earlier hot-plug failed and the running domain gets it at restart.
          if (dom.persistent.some((d) => d.target === want.target)) pending.push(`${want.target} attached (running: absent)`);
          continue;
        }
        const diff = [
          ...(sameSource(want, live) ? [] : [{ field: `${want.target} source`, from: describeSource(live), to: describeSource(want) }]),
          ...attributeChanges(want, live).filter((c) => !c.field.endsWith(' format') || sameSource(want, live)),
        ];
        for (const c of diff) pending.push(`${c.field} ${c.to} (running: ${c.from})`);
      }
    }
    if (dom.running && dom.live) {
      for (const live of dom.live) {
        if (!dom.persistent.some((d) => d.target === live.target) && (live.device === 'disk' || live.device === 'cdrom'))
          pending.push(`${live.target} detached (running: attached)`);
      }
    }
    if (pending.length) out.pending[vm.name] = pending;
    const ownership: Ownership = { created: dom.ownership.created, disks: [...owned].sort() };
    const ownershipChanged = ownership.disks.join(',') !== [...dom.ownership.disks].sort().join(',');
    // An apply killed between the define and its record: the domain carries reconcile's
    // metadata, so it is the one being made, and its record is finished now.
    const rec = input.inventory.objects[recordKey({ type: 'domain', name: vm.name })];
    const finish = rec?.type === 'domain' && rec.status === 'building' && rec.uuid === dom.uuid;
    if (finish) changes.push({ field: 'state', from: 'incomplete (an apply was interrupted)', to: 'complete' });
    if (steps.length || ownershipChanged || finish) {
      out.actions.push({
        id,
        resource: 'domain',
        kind: 'update',
        code: finish ? 'interrupted' : 'drift',
        destructive: false,
        // A change the running guest takes only at its next restart: a maintenance window's business.
        // A change the running guest takes only at its next restart, or a disk pulled out of it
        // live (hot-unplug): a maintenance window's business.
        ...(dom.running && (pending.length || steps.some((st) => st.verb === 'detach-device')) ? { disruptive: true } : {}),
        changes,
        dependsOn,
        reason: `${reasonOf(changes) || 'record disk ownership'}${dom.running && pending.length ? ' (running: pending restart for what cannot change live)' : ''}`,
        op: { type: 'domain.disks', name: vm.name, uuid: dom.uuid, running: dom.running, steps, ownership, ...(finish ? { record: true } : {}) },
      });
    } else {
      out.actions.push({
        id,
        resource: 'domain',
        kind: 'no-op',
        code: dom.ownership.created ? 'in-sync' : 'in-sync-adopted',
        destructive: false,
        changes: [],
        dependsOn: [],
        reason: pending.length ? `in sync; pending restart: ${pending.join(', ')}` : dom.ownership.created ? 'in sync' : 'in sync (adopted: reconcile never undefines it)',
        op: NO_OP,
      });
    }
    if (pending.length) out.notes.push(`vms.${vm.name}: pending restart: ${pending.join(', ')}`);
  }

  for (const [key, rec] of input.orphans) {
    if (rec.type !== 'domain') continue;
    const found = domains.get(rec.name);
    if (found === undefined) continue;
    const dom = found.exists ? found : undefined;
    const id = orphanId(key);
    if (!input.prune) {
      out.notes.push(`domain ${rec.name} left the YAML; \`apply --prune\` undefines it (its disks are kept)`);
      continue;
    }
    if (dom && (dom.uuid !== rec.uuid || !dom.ownership.created)) {
      const reason =
        rec.status === 'building'
          ? 'an apply was killed while defining it, and this domain is not the one it was making (another uuid): forgotten, not undefined'
          : 'redefined by someone else: forgotten, not undefined';
      out.actions.push({
        id,
        resource: 'domain',
        kind: 'delete',
        code: 'not-ours',
        destructive: false,
        changes: [],
        dependsOn: [],
        reason,
        op: { type: 'domain.undefine', name: rec.name, exists: false, inventoryKey: key },
      });
      continue;
    }
    if (dom?.running) {
      out.refusals.push({ id, message: `domain ${rec.name} left the YAML but is running; shut it down before it is undefined` });
      continue;
    }
    out.actions.push({
      id,
      resource: 'domain',
      kind: 'delete',
      code: dom ? 'left-yaml' : 'gone',
      destructive: !!dom,
      changes: [],
      dependsOn: [],
      reason: dom ? `domain ${rec.name} left the YAML (undefined; its disks are not touched by this action)` : 'already gone; forgotten from the inventory',
      op: { type: 'domain.undefine', name: rec.name, uuid: dom?.uuid, exists: !!dom, inventoryKey: key },
    });
  }
  return out;
}

function resolveDisks(
  vm: VmSpec,
  dom: ObservedDomain | null,
  state: DesiredState,
  files: Map<string, Observed<ObservedImage>>,
  errors: Map<string, string>,
  cap: DomainCapabilities | undefined,
  out: VmDiff,
  id: string,
): DiskDevice[] | undefined {
  const disks: DiskDevice[] = [];
  let ok = true;
  const refuse = (origin: string, message: string) => {
    out.refusals.push({ id, message: `${origin}: ${message}` });
    ok = false;
  };
  for (const d of vm.disks) {
    if (cap && !cap.buses.includes(d.bus)) {
      refuse(d.origin, `bus ${d.bus} is not supported by this host (libvirt domcapabilities for ${cap.virtType} lists: ${cap.buses.join(', ')})`);
      continue;
    }
    let dev: Omit<DiskDevice, 'target' | 'bus' | 'cache' | 'io' | 'discard' | 'readonly'>;
    if (d.network) {
      const n = d.network;
      const secret = n.auth ? state.secrets[n.auth.secret] : undefined;
      dev = {
        type: 'network',
        device: d.device,
        driverType: n.format,
        source: {
          protocol: n.protocol,
          name: n.name,
          // The default port written out: libvirt adds it itself, and the definition would differ.
          hosts: [{ name: n.host, port: n.port ?? DEFAULT_PORT[n.protocol] }],
          auth: n.auth && secret ? { username: n.auth.username, secretType: secret.usage, secretUsage: secret.usageId } : undefined,
        },
      };
    } else if (d.image) {
      const img = state.images[d.image]!;
      if (img.format === 'vhdx') {
        refuse(d.origin, `images.${img.name} is vhdx, which libvirt cannot attach; use qcow2, raw, vhd or vmdk for VM disks`);
        continue;
      }
      dev =
        img.location.kind === 'pool'
          ? {
              type: 'volume',
              device: d.device,
              source: { pool: img.location.pool, volume: img.location.volume },
              driverType: VOL_FORMAT[img.format],
              ...(img.encryption && imageSecretUsage(state, img) ? { encryption: { format: 'luks', secretUsage: imageSecretUsage(state, img) } } : {}),
            }
          : {
              type: 'file',
              device: d.device,
              source: { file: img.location.path },
              driverType: DRIVER[img.format],
              // QEMU opens it with the libvirt secret whose usage is its path (declared, or kept by reconcile).
              ...(img.encryption ? { encryption: { format: 'luks', secretUsage: img.location.path } } : {}),
            };
    } else {
      const p = d.path!;
      if (!files.has(p)) {
        refuse(d.origin, `disk ${unobservable(errors, p)}`);
        continue;
      }
      const f = files.get(p)!;
      if (!f.exists) {
        refuse(d.origin, `${p} does not exist`);
        continue;
      }
      dev = f.block ? { type: 'block', device: d.device, source: { dev: p }, driverType: f.driver } : { type: 'file', device: d.device, source: { file: p }, driverType: f.driver };
    }
    disks.push({
      ...dev,
      target: d.target ?? '',
      bus: d.bus,
      cache: d.cache,
      io: d.io,
      discard: d.discard,
      readonly: d.readonly,
      serial: d.serial,
      wwn: d.wwn,
      vendor: d.vendor,
      product: d.product,
    });
  }
  if (!ok) return undefined;
  // Targets: declared, else the one the same source already has, else the next free for the bus.
  const used = new Set([...(dom?.persistent ?? []).map((d) => d.target), ...disks.map((d) => d.target).filter(Boolean)]);
  for (const disk of disks) {
    if (disk.target) continue;
    const existing = dom?.persistent.find((h) => sameSource(disk, h));
    if (existing) {
      disk.target = existing.target;
      continue;
    }
    const bus = disk.bus as DiskSpec['bus'];
    let i = 0;
    while (used.has(targetName(bus, i))) i++;
    disk.target = targetName(bus, i);
    used.add(disk.target);
  }
  return disks;
}
