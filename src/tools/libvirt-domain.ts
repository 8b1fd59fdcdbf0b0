// libvirt domains, for their storage only: observe disks (persistent and live), attach,
// update and detach disk devices, define a new domain, and keep our ownership record in
// the domain's own <metadata>. Other devices of a domain are never touched.
import { withTempFile } from './scratch.js';
import { attr, buildXml, list, parseXml, text, type XmlElement, type XmlNode } from './xml.js';
import { libvirtMessage, type Virsh } from './virsh.js';

export const METADATA_URI = 'https://virt-reconcile.dev/xmlns/storage/1';
const METADATA_KEY = 'vr';

export interface DiskDevice {
  target: string;
  bus: string;
  device: string;
  /** file | block | volume | network */
  type: string;
  source: {
    file?: string;
    dev?: string;
    pool?: string;
    volume?: string;
    /** type network: protocol, name (export, IQN/LUN, pool/image, path), hosts, auth by secret usage */
    protocol?: string;
    name?: string;
    hosts?: { name: string; port?: number }[];
    auth?: { username: string; secretType: string; secretUsage: string };
  };
  driverType?: string;
  cache?: string;
  io?: string;
  discard?: string;
  readonly: boolean;
  /** a LUKS image (qcow2-embedded or raw): opened with the libvirt secret of this usage (the image's path) */
  encryption?: { format: string; secretUsage?: string; secretUuid?: string };
  serial?: string;
  wwn?: string;
  vendor?: string;
  product?: string;
}

/** The port each protocol's server listens on unless told otherwise (libvirt writes these in when none is given). */
export const DEFAULT_PORT: Record<string, number> = { nbd: 10809, iscsi: 3260, rbd: 6789, http: 80, https: 443 };

/** Where a network disk is: protocol://host:port/name (the default port written out), the identity its source is compared by. */
export const networkUrl = (d: DiskDevice) =>
  `${d.source.protocol}://${(d.source.hosts ?? []).map((h) => `${h.name}:${h.port ?? DEFAULT_PORT[d.source.protocol ?? ''] ?? ''}`).join(',')}${d.source.name ? `/${d.source.name.replace(/^\//, '')}` : ''}`;

/** A disk's source as people read it: pool/volume, a path, or a network URL. */
export const diskSourceText = (d: DiskDevice) =>
  d.type === 'network' ? networkUrl(d) : d.type === 'volume' ? `${d.source.pool}/${d.source.volume}` : (d.source.file ?? d.source.dev ?? '?');

/** What the guest reads as a disk's identity: fields of their own in the disk XML. */
export const IDENTITY_FIELDS = ['serial', 'wwn', 'vendor', 'product'] as const;

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

export function parseDisks(domainXml: XmlNode | undefined): DiskDevice[] {
  return list(domainXml?.devices?.disk).map((d) => ({
    target: attr(d.target, 'dev') ?? '',
    bus: attr(d.target, 'bus') ?? '',
    device: attr(d, 'device') ?? 'disk',
    type: attr(d, 'type') ?? 'file',
    source: {
      file: attr(d.source, 'file'),
      dev: attr(d.source, 'dev'),
      pool: attr(d.source, 'pool'),
      volume: attr(d.source, 'volume'),
      ...(attr(d, 'type') === 'network' ? networkSource(d.source) : {}),
    },
    driverType: attr(d.driver, 'type'),
    cache: attr(d.driver, 'cache'),
    io: attr(d.driver, 'io'),
    discard: attr(d.driver, 'discard'),
    readonly: d.readonly !== undefined,
    ...encryptionOf(d),
    ...Object.fromEntries(IDENTITY_FIELDS.map((f) => [f, text(d[f])]).filter(([, v]) => v !== undefined)),
  }));
}

/** <encryption> of a disk: inside <source> (libvirt's form since 6.10), or directly under <disk> (the older one). */
function encryptionOf(d: XmlNode): Pick<DiskDevice, 'encryption'> {
  const e = d.source?.encryption ?? d.encryption;
  if (!e) return {};
  return { encryption: { format: attr(e, 'format') ?? '', secretUsage: attr(e.secret, 'usage'), secretUuid: attr(e.secret, 'uuid') } };
}

function networkSource(s: XmlNode | undefined): DiskDevice['source'] {
  const auth = s?.auth;
  return {
    protocol: attr(s, 'protocol'),
    name: attr(s, 'name'),
    hosts: list(s?.host).map((h) => ({ name: attr(h, 'name') ?? '', port: attr(h, 'port') !== undefined ? Number(attr(h, 'port')) : undefined })),
    auth: auth
      ? { username: attr(auth, 'username') ?? '', secretType: attr(auth.secret, 'type') ?? '', secretUsage: attr(auth.secret, 'usage') ?? attr(auth.secret, 'uuid') ?? '' }
      : undefined,
  };
}

/**
 * Our record inside <metadata>, written by `virsh metadata --key vr`. It names the domain it
 * was written for (its uuid): a definition copied from one of ours (virt-clone, or dumpxml and
 * define under a new name) carries the copy, which proves nothing about the new domain.
 */
export function parseOwnership(xml: string, uuid: string): Ownership {
  const m = /<vr:storage\b([^>]*)>([\s\S]*?)<\/vr:storage>/.exec(xml);
  if (!m) return { created: false, disks: [] };
  const owner = /\bdomain=["']([^"']+)["']/.exec(m[1]!)?.[1];
  // Records written before the uuid was part of them are taken as they are.
  if (owner !== undefined && owner !== uuid) return { created: false, disks: [] };
  const body = m[2]!;
  return {
    created: /<vr:created\s*\/>|<vr:created>true<\/vr:created>/.test(body),
    disks: [...body.matchAll(/<vr:disk\s+target=["']([^"']+)["']/g)].map((x) => x[1]!),
  };
}

/** What the host can give a domain of this virt type (buses, arch). */
export function capabilitiesCommand(virtType: string): string[] {
  return ['domcapabilities', '--virttype', virtType];
}

export function domainReadCommands(names: string[]): string[][] {
  return names.flatMap((n) => [
    ['domstate', n],
    ['dumpxml', '--inactive', n],
    ['dumpxml', n],
  ]);
}

export function parseDomainReads(names: string[], outputs: (string | undefined)[]): Map<string, ObservedDomain | null> {
  const out = new Map<string, ObservedDomain | null>();
  names.forEach((n, i) => {
    const [state, inactive, live] = [outputs[3 * i], outputs[3 * i + 1], outputs[3 * i + 2]];
    if (!state || !inactive) {
      out.set(n, null);
      return;
    }
    const def = parseXml(inactive).domain;
    const running = state.trim() === 'running' || state.trim() === 'paused';
    out.set(n, {
      name: n,
      uuid: text(def?.uuid) ?? '',
      virtType: attr(def, 'type') ?? 'kvm',
      running,
      state: state.trim(),
      persistent: parseDisks(def),
      live: running && live ? parseDisks(parseXml(live).domain) : undefined,
      ownership: parseOwnership(inactive, text(def?.uuid) ?? ''),
    });
  });
  return out;
}

export function parseCapabilities(xml: string): DomainCapabilities {
  const c = parseXml(xml).domainCapabilities;
  const disk = list(c?.devices?.disk)[0];
  const busEnum = list(disk?.enum).find((e) => attr(e, 'name') === 'bus');
  return {
    virtType: text(c?.domain) ?? 'qemu',
    arch: text(c?.arch) ?? 'x86_64',
    buses: list(busEnum?.value)
      .map((v) => text(v) ?? '')
      .filter(Boolean),
  };
}

function encryptionElement(d: DiskDevice): XmlElement | undefined {
  const e = d.encryption;
  if (!e) return undefined;
  return { '@format': e.format, secret: { '@type': 'passphrase', '@usage': e.secretUsage, '@uuid': e.secretUsage ? undefined : e.secretUuid } };
}

function diskElement(d: DiskDevice): XmlElement {
  return {
    '@type': d.type,
    '@device': d.device,
    driver: { '@name': 'qemu', '@type': d.driverType || undefined, '@cache': d.cache || undefined, '@io': d.io || undefined, '@discard': d.discard || undefined },
    source:
      d.type === 'volume'
        ? { '@pool': d.source.pool, '@volume': d.source.volume, encryption: encryptionElement(d) }
        : d.type === 'block'
          ? { '@dev': d.source.dev }
          : d.type === 'network'
            ? {
                '@protocol': d.source.protocol,
                '@name': d.source.name,
                host: (d.source.hosts ?? []).map((h) => ({ '@name': h.name, '@port': h.port })),
                auth: d.source.auth ? { '@username': d.source.auth.username, secret: { '@type': d.source.auth.secretType, '@usage': d.source.auth.secretUsage } } : undefined,
              }
            : { '@file': d.source.file, encryption: encryptionElement(d) },
    target: { '@dev': d.target, '@bus': d.bus },
    readonly: d.readonly ? '' : undefined,
    serial: d.serial,
    wwn: d.wwn,
    vendor: d.vendor,
    product: d.product,
  };
}

export function diskXml(d: DiskDevice): string {
  return buildXml({ disk: diskElement(d) });
}

export function ownershipXml(o: Ownership, uuid: string): string {
  return buildXml({ storage: { '@domain': uuid, created: o.created ? '' : undefined, disk: o.disks.map((t) => ({ '@target': t })) } });
}

/** A new domain as reconcile defines it (its uuid chosen by the caller, so it can be recorded first). */
export interface DomainDefinition {
  name: string;
  virtType: string;
  arch: string;
  memory: number;
  vcpus: number;
  disks: DiskDevice[];
  ownership: Ownership;
}

export function domainXml(d: DomainDefinition & { uuid?: string }): string {
  // No <cpu>: libvirt's default model for the virt type (never host-passthrough, which
  // aborts under nested virtualisation). ACPI for disk hot-plug on the PCI bus.
  return buildXml({
    domain: {
      '@type': d.virtType,
      name: d.name,
      uuid: d.uuid,
      metadata: {
        'vr:storage': {
          '@xmlns:vr': METADATA_URI,
          '@domain': d.uuid,
          'vr:created': d.ownership.created ? '' : undefined,
          'vr:disk': d.ownership.disks.map((t) => ({ '@target': t })),
        },
      },
      memory: { '@unit': 'bytes', '#text': d.memory },
      vcpu: d.vcpus,
      os: { type: { '@arch': d.arch, '#text': 'hvm' } },
      features: { acpi: '', apic: '' },
      devices: { disk: d.disks.map(diskElement), serial: { '@type': 'pty' }, console: { '@type': 'pty' } },
    },
  });
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

export async function setOwnership(v: Virsh, domain: string, uuid: string, o: Ownership, running: boolean): Promise<void> {
  const args = ['metadata', domain, METADATA_URI, '--key', METADATA_KEY, '--set', ownershipXml(o, uuid), '--config'];
  await v.exec(args);
  if (running) await v.exec([...args.slice(0, -1), '--live']).catch(() => undefined);
}

/** The names `virsh list --name` gives with these filters (--all, --state-running). */
async function domainNames(v: Virsh, ...filters: string[]): Promise<string[]> {
  const [names] = await v.batch([['list', ...filters, '--name']]);
  return (names ?? '')
    .split('\n')
    .map((n) => n.trim())
    .filter(Boolean);
}

/** Every disk of every domain, running or not, in its persistent and (if running) live definition. */
export async function allDomainDisks(v: Virsh): Promise<{ domain: string; disk: DiskDevice }[]> {
  const all = await domainNames(v, '--all');
  if (!all.length) return [];
  const xmls = await v.batch(
    all.flatMap((n) => [
      ['dumpxml', '--inactive', n],
      ['dumpxml', n],
    ]),
  );
  return all.flatMap((domain, i) => [xmls[2 * i], xmls[2 * i + 1]].flatMap((xml) => (xml ? parseDisks(parseXml(xml).domain).map((disk) => ({ domain, disk })) : [])));
}

/** The disks of every running domain, declared or not: two batched virsh processes (names, then all their XML). */
export async function runningDomainDisks(v: Virsh): Promise<DiskDevice[]> {
  return (await runningDomainDiskUses(v)).map((u) => u.disk);
}

/** The same, with the domain each disk is in. */
export async function runningDomainDiskUses(v: Virsh): Promise<{ domain: string; disk: DiskDevice }[]> {
  const running = await domainNames(v, '--state-running');
  if (!running.length) return [];
  const xmls = await v.batch(running.map((n) => ['dumpxml', n]));
  return running.flatMap((domain, i) => (xmls[i] ? parseDisks(parseXml(xmls[i]!).domain).map((disk) => ({ domain, disk })) : []));
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
  // Checkpoints of incremental backups are libvirt metadata of the domain: libvirt refuses to
  // undefine a domain that has any unless told to drop them (their bitmaps stay in the images).
  await v.exec(['undefine', domain, '--checkpoints-metadata']);
}

/** Whether the daemon offers KVM domains: undefined if it does, else libvirt's reason. */
export async function kvmRefusal(v: Virsh): Promise<string | undefined> {
  return v.exec(['domcapabilities', '--virttype', 'kvm']).then(
    () => undefined,
    (e: Error) => libvirtMessage(e),
  );
}
