// libvirt domains, for their storage only: observe disks (persistent and live), attach,
// update and detach disk devices, define a new domain, and keep our ownership record in
// the domain's own <metadata>. Other devices of a domain are never touched.
import { withTempFile } from './scratch.js';
import { esc, parseXml, text, type XmlNode } from './xml.js';
import type { Virsh } from './virsh.js';

export const METADATA_URI = 'https://virt-reconcile.dev/xmlns/storage/1';
const METADATA_KEY = 'vr';

export interface DiskDevice {
  target: string;
  bus: string;
  device: string;
  /** file | block | volume | network */
  type: string;
  source: { file?: string; dev?: string; pool?: string; volume?: string };
  driverType?: string;
  cache?: string;
  io?: string;
  discard?: string;
  readonly: boolean;
}

export interface Ownership {
  /** reconcile defined this domain (it may undefine it on prune) */
  created: boolean;
  /** targets of the disks reconcile attached (only these are ever detached) */
  disks: string[];
}

export interface ObservedDomain {
  name: string;
  uuid: string;
  virtType: string;
  running: boolean;
  state: string;
  persistent: DiskDevice[];
  /** the running domain's disks; undefined when shut off */
  live?: DiskDevice[];
  ownership: Ownership;
}

export interface DomainCapabilities {
  virtType: string;
  arch: string;
  buses: string[];
}

function list<T>(v: T | T[] | undefined): T[] {
  return v === undefined ? [] : Array.isArray(v) ? v : [v];
}

export function parseDisks(domainXml: XmlNode): DiskDevice[] {
  return list(domainXml.devices?.disk).map((d: XmlNode) => ({
    target: d.target?.['@dev'],
    bus: d.target?.['@bus'],
    device: d['@device'] ?? 'disk',
    type: d['@type'] ?? 'file',
    source: { file: d.source?.['@file'], dev: d.source?.['@dev'], pool: d.source?.['@pool'], volume: d.source?.['@volume'] },
    driverType: d.driver?.['@type'],
    cache: d.driver?.['@cache'],
    io: d.driver?.['@io'],
    discard: d.driver?.['@discard'],
    readonly: d.readonly !== undefined,
  }));
}

/** Our record inside <metadata>, written by `virsh metadata --key vr`. */
export function parseOwnership(xml: string): Ownership {
  const m = /<vr:storage\b[^>]*>([\s\S]*?)<\/vr:storage>/.exec(xml);
  if (!m) return { created: false, disks: [] };
  return {
    created: /<vr:created\s*\/>|<vr:created>true<\/vr:created>/.test(m[1]!),
    disks: [...m[1]!.matchAll(/<vr:disk\s+target=["']([^"']+)["']/g)].map((x) => x[1]!),
  };
}

export function domainReadCommands(names: string[]): string[][] {
  return names.flatMap((n) => [['domstate', n], ['dumpxml', '--inactive', n], ['dumpxml', n]]);
}

export function parseDomainReads(names: string[], outputs: (string | undefined)[]): Map<string, ObservedDomain | null> {
  const out = new Map<string, ObservedDomain | null>();
  names.forEach((n, i) => {
    const [state, inactive, live] = [outputs[3 * i], outputs[3 * i + 1], outputs[3 * i + 2]];
    if (!state || !inactive) return void out.set(n, null);
    const def = parseXml(inactive).domain;
    const running = state.trim() === 'running' || state.trim() === 'paused';
    out.set(n, {
      name: n,
      uuid: text(def.uuid) ?? '',
      virtType: def['@type'],
      running,
      state: state.trim(),
      persistent: parseDisks(def),
      live: running && live ? parseDisks(parseXml(live).domain) : undefined,
      ownership: parseOwnership(inactive),
    });
  });
  return out;
}

export function parseCapabilities(xml: string): DomainCapabilities {
  const c = parseXml(xml).domainCapabilities;
  const disk = list(c.devices?.disk)[0] as XmlNode;
  const busEnum = list(disk?.enum).find((e: XmlNode) => e['@name'] === 'bus');
  return { virtType: text(c.domain) ?? 'qemu', arch: text(c.arch) ?? 'x86_64', buses: list(busEnum?.value).map((v: XmlNode) => String(text(v) ?? v)) };
}

export function diskXml(d: DiskDevice): string {
  const drv = [`name='qemu'`, d.driverType && `type='${esc(d.driverType)}'`, d.cache && `cache='${esc(d.cache)}'`, d.io && `io='${esc(d.io)}'`, d.discard && `discard='${esc(d.discard)}'`].filter(Boolean).join(' ');
  const src = d.type === 'volume'
    ? `<source pool='${esc(d.source.pool!)}' volume='${esc(d.source.volume!)}'/>`
    : d.type === 'block' ? `<source dev='${esc(d.source.dev!)}'/>` : `<source file='${esc(d.source.file!)}'/>`;
  return `<disk type='${d.type}' device='${d.device}'><driver ${drv}/>${src}<target dev='${esc(d.target)}' bus='${esc(d.bus)}'/>${d.readonly ? '<readonly/>' : ''}</disk>`;
}

export function ownershipXml(o: Ownership): string {
  return `<storage>${o.created ? '<created/>' : ''}${o.disks.map((t) => `<disk target='${esc(t)}'/>`).join('')}</storage>`;
}

export function domainXml(d: { name: string; virtType: string; arch: string; memory: number; vcpus: number; disks: DiskDevice[]; ownership: Ownership }): string {
  // No <cpu>: libvirt's default model for the virt type (never host-passthrough, which
  // aborts under nested virtualisation). ACPI for disk hot-plug on the PCI bus.
  const owned = `<vr:storage xmlns:vr='${METADATA_URI}'>${d.ownership.created ? '<vr:created/>' : ''}${d.ownership.disks.map((t) => `<vr:disk target='${esc(t)}'/>`).join('')}</vr:storage>`;
  return `<domain type='${esc(d.virtType)}'><name>${esc(d.name)}</name><metadata>${owned}</metadata><memory unit='bytes'>${d.memory}</memory><vcpu>${d.vcpus}</vcpu><os><type arch='${esc(d.arch)}'>hvm</type></os><features><acpi/><apic/></features><devices>${d.disks.map(diskXml).join('')}<serial type='pty'/><console type='pty'/></devices></domain>\n`;
}

export async function defineDomain(v: Virsh, xml: string): Promise<void> {
  await withTempFile(xml, (f) => v.exec(['define', f]));
}

/**
 * Applies a disk device change to the persistent definition, and to the running domain
 * where libvirt can; returns false when the running domain keeps the old state until it
 * restarts (pending restart).
 */
export async function changeDisk(v: Virsh, domain: string, verb: 'attach-device' | 'update-device' | 'detach-device', disk: DiskDevice, running: boolean): Promise<boolean> {
  return withTempFile(diskXml(disk), async (f) => {
    await v.exec([verb, domain, f, '--config']);
    if (!running) return true;
    try {
      await v.exec([verb, domain, f, '--live']);
      return true;
    } catch {
      return false;
    }
  });
}

export async function setOwnership(v: Virsh, domain: string, o: Ownership, running: boolean): Promise<void> {
  const args = ['metadata', domain, METADATA_URI, '--key', METADATA_KEY, '--set', ownershipXml(o), '--config'];
  await v.exec(args);
  if (running) await v.exec([...args.slice(0, -1), '--live']).catch(() => undefined);
}

/** The disks of every running domain, declared or not: two batched virsh processes (names, then all their XML). */
export async function runningDomainDisks(v: Virsh): Promise<DiskDevice[]> {
  const [names] = await v.batch([['list', '--name', '--state-running']]);
  const running = (names ?? '').split('\n').map((n) => n.trim()).filter(Boolean);
  if (!running.length) return [];
  const xmls = await v.batch(running.map((n) => ['dumpxml', n]));
  return xmls.flatMap((xml) => (xml ? parseDisks(parseXml(xml).domain) : []));
}

/** The domain's disk devices: the live definition while it runs, else the persistent one. */
export async function readDisks(v: Virsh, domain: string, running: boolean): Promise<DiskDevice[]> {
  return parseDisks(parseXml(await v.exec(['dumpxml', ...(running ? [] : ['--inactive']), domain])).domain);
}

/** Whether a domain of that name is defined (`virsh define` would silently redefine it). */
export async function domainExists(v: Virsh, domain: string): Promise<boolean> {
  const [uuid] = await v.batch([['domuuid', domain]]);
  return uuid !== undefined;
}

export async function domainUuid(v: Virsh, domain: string): Promise<string> {
  return (await v.exec(['domuuid', domain])).trim();
}

export async function undefineDomain(v: Virsh, domain: string): Promise<void> {
  await v.exec(['undefine', domain]);
}
