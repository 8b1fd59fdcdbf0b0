// libvirt storage pools through virsh: the XML for every pool type, batched observation,
// and define / build / start / autostart / stop / delete / undefine.
import { randomBytes } from 'node:crypto';
import type { Permissions, PoolSpec, SecretSpec } from '../reconcile/model.js';
import { withTempFile } from './scratch.js';
import { attr, buildXml, bytes, list, parseXml, parseXmlForEdit, text, type XmlElement, type XmlNode } from './xml.js';
import { libvirtMessage, type Virsh } from './virsh.js';
export { libvirtMessage };

export interface PoolDefinition {
  type: PoolSpec['type'];
  path?: string;
  source: {
    hosts: { name: string; port?: number }[];
    dir?: string;
    format?: string;
    device?: string;
    name?: string;
    initiator?: string;
    auth?: { type: 'chap' | 'ceph'; username: string; secretUsage: string };
  };
  permissions?: Permissions;
}

export interface ObservedPool {
  name: string;
  uuid?: string;
  definition: PoolDefinition;
  active: boolean;
  autostart: boolean;
  persistent: boolean;
  capacity?: number;
  allocation?: number;
  available?: number;
  /** volume name -> path, for active pools */
  volumes?: Map<string, string>;
}

// Where libvirt looks when the YAML gives no path, per type (virsh pool-define-as defaults).
const DEFAULT_TARGET: Partial<Record<PoolSpec['type'], (s: PoolSpec) => string>> = {
  logical: (s) => `/dev/${s.source.name ?? s.name}`,
  disk: () => '/dev',
  iscsi: () => '/dev/disk/by-path',
};

/** "host", "host:port" or a comma-separated list of them (rbd monitors). */
export function parseHosts(value?: string): { name: string; port?: number }[] {
  if (!value) return [];
  return value
    .split(',')
    .map((h) => h.trim())
    .filter(Boolean)
    .map((h) => {
      const m = /^(\[[^\]]+\]|[^:]+)(?::(\d+))?$/.exec(h);
      return m ? { name: m[1]!, port: m[2] ? Number(m[2]) : undefined } : { name: h };
    });
}

export function secretUsageFor(poolName: string): string {
  return `virt-reconcile/pool/${poolName}`;
}

export function definitionFor(spec: PoolSpec, secrets: Record<string, SecretSpec> = {}): PoolDefinition {
  const s = spec.source;
  return {
    type: spec.type,
    path: spec.path ?? DEFAULT_TARGET[spec.type]?.(spec),
    source: {
      hosts: parseHosts(s.host),
      dir: s.dir,
      format: s.format ?? (spec.type === 'logical' ? 'lvm2' : undefined),
      device: s.device,
      name: spec.type === 'logical' ? (s.name ?? spec.name) : s.name,
      initiator: s.initiator,
      // A declared secret is referred to by its usage id; a secretFile by the one made for the pool.
      auth: s.auth
        ? { type: s.auth.type, username: s.auth.username, secretUsage: s.auth.secret ? (secrets[s.auth.secret]?.usageId ?? s.auth.secret) : secretUsageFor(spec.name) }
        : undefined,
    },
    permissions: spec.permissions,
  };
}

/** <permissions> of a target, or nothing when none is declared. */
export function permissionsElement(p?: Permissions): XmlElement | undefined {
  if (!p || (p.mode === undefined && p.owner === undefined && p.group === undefined)) return undefined;
  return { mode: p.mode !== undefined ? `0${p.mode.toString(8)}` : undefined, owner: p.owner, group: p.group };
}

export function poolXml(name: string, d: PoolDefinition, uuid?: string): string {
  const s = d.source;
  // iscsi-direct and rbd pools have no target in libvirt's schema.
  const hasTarget = d.type !== 'iscsi-direct' && d.type !== 'rbd' && d.path;
  return buildXml({
    pool: {
      '@type': d.type,
      name,
      uuid,
      source: {
        host: s.hosts.map((h) => ({ '@name': h.name, '@port': h.port || undefined })),
        device: s.device ? { '@path': s.device } : undefined,
        dir: s.dir ? { '@path': s.dir } : undefined,
        name: s.name,
        format: s.format ? { '@type': s.format } : undefined,
        initiator: s.initiator ? { iqn: { '@name': s.initiator } } : undefined,
        auth: s.auth ? { '@type': s.auth.type, '@username': s.auth.username, secret: { '@usage': s.auth.secretUsage } } : undefined,
      },
      target: hasTarget ? { path: d.path, permissions: permissionsElement(d.permissions) } : undefined,
    },
  });
}

export function parsePoolXml(xml: string): { name: string; uuid?: string; definition: PoolDefinition; capacity?: number; allocation?: number; available?: number } {
  const p = parseXml(xml).pool ?? {};
  const src = p.source ?? {};
  const perms = p.target?.permissions;
  const auth = src.auth;
  const mode = text(perms?.mode);
  const num = (n: XmlNode | undefined) => (text(n) !== undefined ? Number(text(n)) : undefined);
  return {
    name: text(p.name) ?? '',
    uuid: text(p.uuid),
    capacity: bytes(p.capacity),
    allocation: bytes(p.allocation),
    available: bytes(p.available),
    definition: {
      type: (attr(p, 'type') ?? 'dir') as PoolDefinition['type'],
      path: text(p.target?.path),
      source: {
        hosts: list(src.host).map((h) => ({ name: attr(h, 'name') ?? '', port: attr(h, 'port') ? Number(attr(h, 'port')) : undefined })),
        dir: attr(src.dir, 'path'),
        format: attr(src.format, 'type'),
        device: attr(list(src.device)[0], 'path'),
        name: text(src.name),
        initiator: attr(src.initiator?.iqn, 'name'),
        auth: auth
          ? { type: attr(auth, 'type') as 'chap' | 'ceph', username: attr(auth, 'username') ?? '', secretUsage: attr(auth.secret, 'usage') ?? attr(auth.secret, 'uuid') ?? '' }
          : undefined,
      },
      permissions: perms ? { mode: mode !== undefined ? parseInt(mode, 8) : undefined, owner: num(perms.owner), group: num(perms.group) } : undefined,
    },
  };
}

function parseInfo(out: string): { active: boolean; autostart: boolean; persistent: boolean } {
  const field = (k: string) => new RegExp(`^${k}:\\s*(.+)$`, 'm').exec(out)?.[1]?.trim();
  return { active: field('State') === 'running', autostart: field('Autostart') === 'yes', persistent: field('Persistent') === 'yes' };
}

/**
 * vol-list's table: name, then path. Either may hold spaces (a pool under "/srv/my pool"), so
 * the columns are told apart by the pool's own target path where it has one, else by the
 * path's leading slash; only a path without one (rbd) falls back to the last word.
 */
export function parseVolList(out: string | undefined, poolPath?: string): Map<string, string> {
  const m = new Map<string, string>();
  for (const line of (out ?? '').split('\n')) {
    const t = line.trim();
    if (!t) continue;
    const at = poolPath ? t.indexOf(` ${poolPath.replace(/\/$/, '')}/`) : -1;
    const slash = /^(.*?)\s+(\/.*)$/.exec(t);
    if (at > 0) m.set(t.slice(0, at).trimEnd(), t.slice(at + 1));
    else if (slash) m.set(slash[1]!, slash[2]!);
    else {
      const parts = t.split(/\s+/);
      const volPath = parts[parts.length - 1]!;
      m.set(parts.slice(0, -1).join(' ') || volPath, volPath);
    }
  }
  return m;
}

/** One batch for all named pools: info, XML and volume list of each. */
export function poolReadCommands(names: string[]): string[][] {
  return names.flatMap((n) => [
    ['pool-info', n],
    ['pool-dumpxml', n],
    ['vol-list', n],
  ]);
}

export function parsePoolReads(names: string[], outputs: (string | undefined)[]): Map<string, ObservedPool | null> {
  const out = new Map<string, ObservedPool | null>();
  names.forEach((n, i) => {
    const [info, xml, vols] = [outputs[3 * i], outputs[3 * i + 1], outputs[3 * i + 2]];
    if (!info || !xml) {
      out.set(n, null);
      return;
    }
    const st = parseInfo(info);
    const parsed = parsePoolXml(xml);
    out.set(n, { ...parsed, ...st, volumes: st.active ? parseVolList(vols, parsed.definition.path) : undefined });
  });
  return out;
}

/** The pool's definition as libvirt holds it now. */
export async function readPool(v: Virsh, name: string): Promise<ReturnType<typeof parsePoolXml>> {
  return parsePoolXml(await v.exec(['pool-dumpxml', name]));
}

/** The volumes an active pool holds now (its storage read again first). */
export async function poolVolumes(v: Virsh, name: string): Promise<string[]> {
  const [, list] = await v.sequence([
    ['pool-refresh', name],
    ['vol-list', name],
  ]);
  return [...parseVolList(list).keys()];
}

/**
 * Makes libvirt read these pools' storage again (it keeps its own list of their volumes), in
 * one virsh process. Best effort: a pool that is not running (or not there) cannot be
 * refreshed, and its observation says so.
 */
export async function refreshPoolsQuietly(v: Virsh, names: string[]): Promise<void> {
  await v.each(names.map((n) => [['pool-refresh', n]]));
}

/** libvirt keeps its own list of a pool's volumes: this makes it read the storage again. */
export async function refreshPool(v: Virsh, name: string): Promise<void> {
  await v.exec(['pool-refresh', name]);
}

/** The persistent definition exactly as libvirt holds it (what a failed replace puts back). */
export async function poolDefinitionXml(v: Virsh, name: string): Promise<string> {
  return v.exec(['pool-dumpxml', '--inactive', name]);
}

/**
 * A pool definition with its target's owner, group and mode set as given (undefined: as they
 * are); everything else in it is kept as libvirt wrote it.
 */
export function withTargetPermissions(xml: string, p: Permissions): string {
  const doc = parseXmlForEdit(xml);
  const pool = doc.pool as XmlElement;
  pool.target ??= {};
  const target = pool.target as XmlElement;
  const perms = (target.permissions && typeof target.permissions === 'object' ? target.permissions : {}) as XmlElement;
  if (p.mode !== undefined) perms.mode = `0${p.mode.toString(8)}`;
  if (p.owner !== undefined) perms.owner = p.owner;
  if (p.group !== undefined) perms.group = p.group;
  target.permissions = perms;
  return buildXml(doc);
}

/** Defines a pool from XML as given (a definition read back with poolDefinitionXml). */
export async function definePoolXml(v: Virsh, xml: string): Promise<void> {
  await withTempFile(xml, (f) => v.exec(['pool-define', f]));
}

/** Defines (or redefines, for an existing name) the persistent pool. */
export async function definePool(v: Virsh, name: string, d: PoolDefinition, uuid?: string): Promise<void> {
  await withTempFile(poolXml(name, d, uuid), (f) => v.exec(['pool-define', f]));
}

/**
 * Builds a pool's storage. --no-overwrite: a device that already holds a filesystem,
 * a partition table or a volume group is never formatted.
 */
/** Builds a pool's storage; false if there was nothing to build (already built, or on a server). */
export async function buildPool(v: Virsh, name: string, type: PoolSpec['type']): Promise<boolean> {
  if (type === 'iscsi' || type === 'iscsi-direct' || type === 'rbd' || type === 'netfs') {
    if (type !== 'netfs') return false; // nothing to build: the storage lives on the server
    await v.exec(['pool-build', name]);
    return true;
  }
  try {
    await v.exec(['pool-build', name, ...(type === 'dir' ? [] : ['--no-overwrite'])]);
    return true;
  } catch (e) {
    // A device that already holds the pool's filesystem/label is what we want: keep it.
    if (/Storage pool already built/.test((e as Error).message)) return false;
    throw new Error(`could not build ${type} pool ${name}: ${libvirtMessage(e)}`);
  }
}

/**
 * A new dir pool by one virsh process: defined with the uuid reconcile chose, then built (a
 * directory made), started and its autostart set — each by that uuid, never by name: if the
 * define fails because another pool took the name meanwhile, the later steps find no pool and
 * touch nothing. virsh goes on after a failed step; the first failure is the one reported.
 */
export async function createDirPool(
  v: Virsh,
  name: string,
  d: PoolDefinition,
  uuid: string,
  o: { active: boolean; autostart: boolean; build: boolean },
): Promise<{ defined: boolean; error?: string }> {
  return withTempFile(poolXml(name, d, uuid), async (f) => {
    const steps = [
      ['define', ['pool-define', f]] as const,
      ...(o.build ? [['build', ['pool-build', uuid]] as const] : []),
      ...(o.active ? [['start', ['pool-start', uuid]] as const] : []),
      ['set autostart of', ['pool-autostart', uuid, ...(o.autostart ? [] : ['--disable'])]] as const,
    ];
    const results = await v.each(steps.map(([, cmd]) => [[...cmd]]));
    const failed = results.findIndex((r) => r.errors.length);
    if (failed < 0) return { defined: true };
    const why = libvirtMessage({ stderr: results[failed]!.errors.map((l) => `error: ${l}`).join('\n') });
    return { defined: failed > 0, error: `could not ${steps[failed]![0]} dir pool ${name}: ${why}` };
  });
}

export async function startPool(v: Virsh, name: string, type?: string): Promise<void> {
  try {
    await v.exec(['pool-start', name]);
  } catch (e) {
    throw new Error(`could not start ${type ?? ''} pool ${name}: ${libvirtMessage(e)}`.replace('  ', ' '));
  }
}

export async function stopPool(v: Virsh, name: string): Promise<void> {
  await v.exec(['pool-destroy', name]);
}

export async function setAutostart(v: Virsh, name: string, on: boolean): Promise<void> {
  await v.exec(['pool-autostart', name, ...(on ? [] : ['--disable'])]);
}

/**
 * Deletes an inactive pool's storage (libvirt's pool-delete): an rmdir of the target for dir,
 * fs and netfs pools (a directory still holding anything stays); vgremove -f and pvremove for
 * logical pools — whatever the VG holds — so callers make sure it holds nothing first.
 */
export async function deletePoolStorage(v: Virsh, name: string): Promise<void> {
  await v.exec(['pool-delete', name]);
}

export async function undefinePool(v: Virsh, name: string): Promise<void> {
  await v.exec(['pool-undefine', name]);
}

/** A libvirt secret for pool authentication; the value is read from the file by virsh, never by us. */
export async function ensureSecret(v: Virsh, usage: string, type: 'chap' | 'ceph', secretFile: string): Promise<void> {
  const xml = buildXml({
    secret: {
      '@ephemeral': 'no',
      '@private': 'yes',
      description: usage,
      usage: type === 'ceph' ? { '@type': 'ceph', name: usage } : { '@type': 'iscsi', target: usage },
    },
  });
  await withTempFile(xml, (f) => v.exec(['secret-define', f]));
  const uuid = (await v.exec(['secret-list']))
    .split('\n')
    .map((l) => l.trim().split(/\s+/))
    .find((cols) => cols.slice(1).join(' ').includes(usage))?.[0];
  if (!uuid) throw new Error(`libvirt secret for ${usage} was defined but is not listed`);
  await v.exec(['secret-set-value', uuid, '--file', secretFile, '--plain']);
}

/**
 * What is at a directory on the daemon's host, asked of libvirt itself (for a remote
 * connection, where this host's file system says nothing): a transient dir pool is started
 * on it, never built, its entries listed, and destroyed again (which leaves the directory as
 * it was). A missing directory, or something else, is told by libvirt's refusal to start it.
 */
export async function probeDirectory(
  v: Virsh,
  p: string,
): Promise<{ kind: 'missing' } | { kind: 'directory'; entries: string[] } | { kind: 'other' } | { kind: 'unreadable'; why: string }> {
  const name = `vr-probe-${randomBytes(6).toString('hex')}`;
  try {
    await v.exec(['pool-create-as', name, 'dir', '--target', p]);
  } catch (e) {
    const msg = libvirtMessage(e);
    if (/No such file or directory/i.test(msg)) return { kind: 'missing' };
    if (/Not a directory/i.test(msg)) return { kind: 'other' };
    return { kind: 'unreadable', why: `cannot read ${p} on the libvirt host: ${msg}` };
  }
  try {
    return { kind: 'directory', entries: (await poolVolumes(v, name)).sort() };
  } finally {
    await v.exec(['pool-destroy', name]).catch(() => undefined);
  }
}
