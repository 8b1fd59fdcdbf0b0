// Observation for a plan, one batched pass per tool for all kinds at once (kinds declare
// their targets up front; see Kind.targets). Image files: one stat pass, qemu-img only for
// files not in the stat-keyed cache. libvirt: pools, domains and capabilities in one virsh
// batch, volumes the cache cannot answer in one more.
import { createHash } from 'node:crypto';
import { lstat, readdir, readlink, stat } from 'node:fs/promises';
import { readSmallFile, type SmallFileDigest } from './common/small-files.js';
import { rememberSecret } from '../tools/redact.js';
import { lstatIdentity, whatIsAt, type FileIdentity } from './common/files.js';
import { observeImages, type ObservedImage } from './image/observe.js';
import { parsePoolReads, poolReadCommands, probeDirectory, refreshPoolsQuietly, type ObservedPool } from '../tools/libvirt-pool.js';
import { parseVolumeXml, volumeReadCommands, type ObservedVolume } from '../tools/libvirt-volume.js';
import { cacheable, fileSignature, type StatCache } from './common/stat-cache.js';
import {
  allDomainDisks,
  capabilitiesCommand,
  type DiskDevice,
  domainReadCommands,
  parseCapabilities,
  parseDomainReads,
  type DomainCapabilities,
  type ObservedDomain,
} from '../tools/libvirt-domain.js';
import { domcapsCacheKey, domcapsSignature } from './domain/domcaps-signature.js';
import { kvmAccess, type KvmAccess } from './domain/kvm-access.js';
import { isRemoteUri, type Virsh } from '../tools/virsh.js';
import { readSecrets, type ObservedSecret } from '../tools/libvirt-secret.js';
import { makeResolver } from '../reconcile/paths.js';
import type { Suspensions } from '../backups/suspension.js';
import { processAlive } from '../tools/exec.js';
import { readBackupRecords } from '../backups/records.js';
import { sourceKey, type ResolvedSources, type SourceTarget } from '../sources/resolve.js';
import type { PublishTarget } from '../reconcile/model.js';
import type { RemoteObject } from '../publish/place.js';

/**
 * What observation found at one target: nothing, or the object as read (Crossplane's
 * ExternalObservation). Every declared target is in its map, so a missing key means only
 * one thing: the target could not be observed, and `errors` says why.
 */
export type Observed<T> = { exists: false } | ({ exists: true } & T);

export const ABSENT: { exists: false } = { exists: false };

/** Observed<T> from what a reader returns (null: absent). */
export function observed<T extends object>(o: T | null): Observed<T> {
  return o ? { exists: true, ...o } : ABSENT;
}

/** For display and reports: the object if it was found, else undefined (absent or not observed alike). */
export function present<T>(o: Observed<T> | undefined): ({ exists: true } & T) | undefined {
  return o?.exists ? o : undefined;
}

function explicit<T extends object>(m: Map<string, T | null>): Map<string, Observed<T>> {
  return new Map([...m].map(([k, o]) => [k, observed(o)]));
}

export interface Observation {
  files: Map<string, Observed<ObservedImage>>;
  pools: Map<string, Observed<ObservedPool>>;
  volumes: Map<string, Observed<ObservedVolume>>;
  domains: Map<string, Observed<ObservedDomain>>;
  /** domcapabilities by virt type (kvm, qemu) */
  caps: Map<string, DomainCapabilities>;
  /** whether new domains can use KVM (looked at only when domains are declared) */
  kvm?: KvmAccess;
  /** paths that could not be observed, with why: the objects on them are refused, not the whole plan */
  errors: Map<string, string>;
  /** what is at the directories asked for (a pool's target): nothing, a directory and its entries, or something else */
  directories: Map<string, DirectoryContent>;
  /** sha256, size and stat signature of the small files asked for (cloud-init seed files, secret values); one that cannot be read is in errors */
  contents: Map<string, SmallFileDigest>;
  /** if asked: every libvirt secret (their definitions; private values are never readable) */
  secrets?: ObservedSecret[];
  /** identity (lstat: device, inode, birth time) of the paths asked for, null if nothing is there */
  identities: Map<string, FileIdentity | null>;
  /** the libvirt URI observed, if libvirt was asked anything */
  connection?: string;
  /** backup schedules: when each last succeeded (from the state directory's records), if asked */
  backupSuccess?: Record<string, string>;
  /** each schedule's last failed run (when and why) */
  backupFailure?: Record<string, { at: string; error: string }>;
  /** schedules suspended after maxFailures failed runs in a row */
  backupSuspended?: Suspensions;
  /** backups whose copies failed their last check (verify, verify.every, backup verify) */
  backupBadCopies?: { schedule: string; id: string; error: string }[];
  /** backup runs that were interrupted (killed), by schedule */
  backupInProgress?: Record<string, { id: string; vm: string }>;
  /** a restore into images that was interrupted (see backups/records.ts) */
  backupRestoring?: { id: string; vm: string; asides: { source: string; aside: string }[] };
  /** what is at each publish target asked for (null: nothing), keyed by its URL; one that could not be read is in errors as "publish:URL" */
  remotes?: Map<string, RemoteObject | null>;
  /** SHA-256 of the files asked for (absent: no such file, or unreadable: in errors) */
  digests?: Map<string, string>;
  /** image sources as resolved (see sources/resolve.ts), if asked */
  sources?: ResolvedSources;
  /** if asked: the domains (any, declared or not) that have each file or volume as a disk, keyed by path or "pool/volume" */
  diskUsers?: Map<string, string[]>;
  /** why diskUsers could not be read (libvirt unreachable, and nothing else needed it) */
  diskUsersError?: string;
}

export type DirectoryContent = { kind: 'missing' } | { kind: 'directory'; entries: string[] } | { kind: 'other' } | { kind: 'unreadable'; why: string };

async function directoryContent(p: string): Promise<DirectoryContent> {
  try {
    const kind = await whatIsAt(p);
    return kind === 'directory' ? { kind, entries: (await readdir(p)).sort() } : { kind };
  } catch (e) {
    const err = e as NodeJS.ErrnoException;
    return { kind: 'unreadable', why: `cannot read ${p}: ${err.code ?? err.message}` };
  }
}

/** Why a path could not be observed, as one message that names the path. */
export function unobservable(errors: Map<string, string>, p: string): string {
  const why = errors.get(p) ?? 'not observed';
  return why.includes(p) ? why : `cannot observe ${p}: ${why}`;
}

/** Every object observed, keyed "<what>:<name>": what a saved plan must find unchanged. */
export function observedObjects(obs: Observation): [string, object][] {
  const out: [string, object][] = [];
  for (const [prefix, map] of [
    ['file', obs.files],
    ['pool', obs.pools],
    ['volume', obs.volumes],
    ['domain', obs.domains],
  ] as const) {
    for (const [k, o] of map) out.push([`${prefix}:${k}`, o]);
  }
  // Seed and secret files by their stat signature only (their hash would name their content):
  // one written since the plan makes the plan stale.
  for (const [k, f] of obs.contents) out.push([`file:${k}`, { signature: f.signature }]);
  // A checksum list or directory that changed since the plan makes it stale too.
  // Keyed by a hash: the key holds URLs, and a signed URL's query is a credential.
  for (const [k, d] of obs.sources?.digests ?? []) out.push([`source:${createHash('sha256').update(k).digest('hex').slice(0, 16)}`, { digest: d }]);
  return out;
}

/** What the kinds ask to observe, merged: each tool is asked once for all of it. */
export interface Targets {
  files: string[];
  pools: string[];
  /** header: a file volume whose qcow2 options only qemu-img can report */
  volumes: { pool: string; name: string; header?: boolean }[];
  domains: string[];
  /** paths whose identity alone is needed (files recorded as being published) */
  identities: string[];
  /** directories whose content is needed (pool targets: made by reconcile, or found) */
  directories?: string[];
  /** small files whose content digest is needed (cloud-init seed files, secret values) */
  contents?: string[];
  /** those of them that hold a secret value: blanked out of anything a tool says (tools/redact.ts) */
  secretFiles?: string[];
  /** every libvirt secret of the connection */
  secrets?: boolean;
  /** pools whose volume list must be current (libvirt keeps its own until a refresh): those whose storage a prune may delete */
  refreshPools?: string[];
  /** the record of backup runs */
  backupRuns?: boolean;
  /** which domains use which files and volumes as disks (before anything is pruned) */
  diskUsers?: boolean;
  /** digests of image sources: a download's from its checksum list, a directory's content */
  sources?: SourceTarget[];
  /** objects at publish targets (HEAD: size and the digest they were uploaded with) */
  remotes?: PublishTarget[];
  /** files whose SHA-256 is needed (images that are published), from the stat-keyed cache when unchanged */
  digests?: string[];
}

export function mergeTargets(parts: Partial<Targets>[]): Targets {
  const files = new Set<string>();
  const pools = new Set<string>();
  const domains = new Set<string>();
  const identities = new Set<string>();
  const directories = new Set<string>();
  const contents = new Set<string>();
  const volumes = new Map<string, { pool: string; name: string; header?: boolean }>();
  for (const t of parts) {
    for (const d of t.directories ?? []) directories.add(d);
    for (const f of t.contents ?? []) contents.add(f);
    for (const f of t.files ?? []) files.add(f);
    for (const p of t.pools ?? []) pools.add(p);
    for (const d of t.domains ?? []) domains.add(d);
    for (const p of t.identities ?? []) identities.add(p);
    for (const v of t.volumes ?? []) {
      const k = `${v.pool}/${v.name}`;
      volumes.set(k, { ...v, header: v.header || volumes.get(k)?.header });
    }
  }
  return {
    files: [...files].sort(),
    pools: [...pools].sort(),
    volumes: [...volumes.values()].sort((a, b) => `${a.pool}/${a.name}`.localeCompare(`${b.pool}/${b.name}`)),
    domains: [...domains].sort(),
    identities: [...identities].sort(),
    directories: [...directories].sort(),
    contents: [...contents].sort(),
    secretFiles: [...new Set(parts.flatMap((t) => t.secretFiles ?? []))].sort(),
    backupRuns: parts.some((t) => t.backupRuns),
    secrets: parts.some((t) => t.secrets),
    refreshPools: [...new Set(parts.flatMap((t) => t.refreshPools ?? []))].sort(),
    diskUsers: parts.some((t) => t.diskUsers),
    sources: [...new Map(parts.flatMap((t) => t.sources ?? []).map((x) => [sourceKey(x), x])).values()],
    remotes: [...new Map(parts.flatMap((t) => t.remotes ?? []).map((x) => [x.to, x])).values()],
    digests: [...new Set(parts.flatMap((t) => t.digests ?? []))].sort(),
  };
}

/**
 * Observes everything the targets name: files and libvirt in parallel; then the headers of
 * file volumes whose qcow2 options are declared (their paths come from libvirt).
 */
export async function observe(targets: Targets, opts: { stateDir: string; virsh: () => Virsh; cache?: StatCache }): Promise<Observation> {
  const obs: RawObservation = {
    files: new Map(),
    pools: new Map(),
    volumes: new Map(),
    domains: new Map(),
    caps: new Map(),
    errors: new Map(),
    identities: new Map(),
    directories: new Map(),
    contents: new Map(),
  };
  const needsLibvirt = targets.pools.length || targets.volumes.length || targets.domains.length || targets.diskUsers || targets.secrets;
  const virsh = needsLibvirt ? opts.virsh() : undefined;
  const libvirtTargets: LibvirtTargets = { pools: targets.pools, volumes: targets.volumes, domains: targets.domains, virtTypes: [] };
  // New domains are kvm only where the QEMU user can open /dev/kvm; one virt type's
  // capabilities (bus support) serve every declared domain.
  if (virsh && targets.domains.length) {
    obs.kvm = await kvmAccess(virsh.uri, virsh);
    libvirtTargets.virtTypes = [obs.kvm.virtType];
    libvirtTargets.capsSignature = await domcapsSignature(obs.kvm.usable);
  }
  // Files put in a pool's storage behind libvirt's back are seen before a plan says it is empty.
  if (virsh && targets.refreshPools?.length) await refreshPoolsQuietly(virsh, targets.refreshPools);
  if (targets.backupRuns) {
    const records = await readBackupRecords(opts.stateDir);
    obs.backupSuccess = records.lastSuccess;
    obs.backupFailure = records.lastFailure;
    obs.backupSuspended = records.suspended;
    obs.backupRestoring = records.restoring;
    // Only runs whose process is gone: plan takes no lock, and a run may be under way.
    obs.backupInProgress = Object.fromEntries(Object.entries(records.inProgress ?? {}).filter(([, x]) => !x.pid || !processAlive(x.pid)));
    obs.backupBadCopies = records.runs.flatMap((r) =>
      r.verified === false || r.restoreVerifyError
        ? [{ schedule: r.schedule, id: r.id, error: r.verifyError ?? `restored and compared (\`backup verify ${r.schedule} --restore\` checks it again): ${r.restoreVerifyError}` }]
        : [],
    );
  }
  const [, , libvirt] = await Promise.all([
    observeMore(obs.files, targets.files, opts.cache, obs.errors),
    Promise.all([
      ...targets.identities.map(async (p) => obs.identities.set(p, (await lstatIdentity(p)) ?? null)),
      // A pool's target on another host is asked of libvirt there (this host's file system says nothing of it).
      ...(targets.directories ?? []).map(async (p) => obs.directories.set(p, virsh && isRemoteUri(virsh.uri) ? await probeDirectory(virsh, p) : await directoryContent(p))),
      ...(targets.contents ?? []).map((p) =>
        readSmallFile(p).then(
          ({ content, ...d }) => {
            if (targets.secretFiles?.includes(p) && content.length <= 4096) rememberSecret(content);
            obs.contents.set(p, d);
          },
          (e: NodeJS.ErrnoException) => obs.errors.set(p, e.code ? `cannot read ${p}: ${e.code}` : e.message),
        ),
      ),
    ]),
    virsh && (targets.pools.length || targets.volumes.length || targets.domains.length) ? observeLibvirt(virsh, libvirtTargets, opts.cache) : undefined,
    virsh && targets.secrets ? readSecrets(virsh).then((s) => (obs.secrets = s)) : undefined,
    targets.sources?.length ? import('../sources/resolve.js').then(async (m) => (obs.sources = await m.resolveSources(targets.sources!))) : undefined,
    targets.remotes?.length ? import('../publish/observe.js').then(async (m) => (obs.remotes = await m.observeRemotes(targets.remotes!, obs.errors))) : undefined,
    targets.digests?.length ? import('../publish/observe.js').then(async (m) => (obs.digests = await m.fileDigests(targets.digests!, opts.cache, obs.errors))) : undefined,
  ]);
  if (virsh && targets.secrets) obs.connection ??= virsh.uri;
  if (libvirt) Object.assign(obs, libvirt, { connection: virsh!.uri });
  if (virsh && targets.diskUsers) {
    try {
      obs.diskUsers = await diskUsers(await allDomainDisks(virsh), opts.cache);
    } catch (e) {
      // Image files alone do not need libvirt: a plan still works without it, and only a
      // delete that would need the answer is refused.
      if (libvirt) throw e;
      obs.diskUsersError = (e as Error).message;
    }
  }
  const headers = targets.volumes
    .filter((v) => v.header)
    .map((v) => obs.volumes.get(`${v.pool}/${v.name}`))
    .filter((v): v is ObservedVolume => !!v && v.type === 'file' && v.format === 'qcow2')
    .map((v) => v.path);
  await observeMore(obs.files, headers, opts.cache, obs.errors);
  return { ...obs, files: explicit(obs.files), pools: explicit(obs.pools), volumes: explicit(obs.volumes), domains: explicit(obs.domains) };
}

/**
 * Which domains use which files: each disk's source under every spelling (as written, and
 * resolved through symlinks and `..`), and every file in its backing chain (an overlay of
 * someone's on one of reconcile's images uses that image too). Volumes also by "pool/volume".
 */
async function diskUsers(disks: { domain: string; disk: DiskDevice }[], cache?: StatCache): Promise<Map<string, string[]>> {
  const out = new Map<string, string[]>();
  const resolve = makeResolver();
  const use = (key: string, domain: string) => {
    const users = out.get(key) ?? [];
    if (!users.includes(domain)) out.set(key, [...users, domain]);
  };
  const files = new Map<string, Set<string>>();
  for (const { domain, disk } of disks) {
    if (disk.type === 'volume' && disk.source.pool && disk.source.volume) use(`${disk.source.pool}/${disk.source.volume}`, domain);
    const f = disk.source.file ?? disk.source.dev;
    if (f) files.set(f, (files.get(f) ?? new Set()).add(domain));
  }
  // Backing chains, a level at a time (qemu-img info of each file, from the stat-keyed cache).
  let level = [...files.keys()];
  for (let depth = 0; level.length && depth < 16; depth++) {
    const seen = await observeImages(level, cache, new Map());
    const next: string[] = [];
    for (const f of level) {
      const backing = seen.get(f)?.backing;
      if (!backing || files.has(backing)) continue;
      files.set(backing, new Set(files.get(f)));
      next.push(backing);
    }
    level = next;
  }
  // By path as written and resolved, and by the file's identity (device, inode): a record names
  // the file as it was created, a domain through whatever spelling it was given.
  await Promise.all(
    [...files].map(async ([f, domains]) => {
      const st = await stat(f).catch(() => undefined);
      for (const d of domains) for (const key of new Set([f, resolve(f), ...(st ? [`id:${st.dev}:${st.ino}`] : [])])) use(key, d);
    }),
  );
  return out;
}

/** As the readers return it: null for absent. */
type RawObservation = Omit<Observation, 'files' | 'pools' | 'volumes' | 'domains'> & {
  files: Map<string, ObservedImage | null>;
  pools: Map<string, ObservedPool | null>;
  volumes: Map<string, ObservedVolume | null>;
  domains: Map<string, ObservedDomain | null>;
};

export interface LibvirtTargets {
  pools: string[];
  volumes: { pool: string; name: string }[];
  domains: string[];
  /** virt types whose domcapabilities are needed */
  virtTypes: string[];
  /** identity of what the answer depends on (see domcapsSignature): cached answers are reused */
  capsSignature?: string;
}

export async function observeMore(
  observed: Map<string, ObservedImage | null>,
  paths: string[],
  cache?: StatCache,
  /** paths that could not be observed, with why: the objects on them are refused, not the whole plan */
  errors?: Map<string, string>,
): Promise<void> {
  const todo = paths.filter((p) => !observed.has(p) && !errors?.has(p));
  if (!todo.length) return;
  for (const [p, o] of await observeImages(todo, cache, errors)) observed.set(p, o);
}

/** The cache key of a file volume's XML observation. */
export const volumeCacheKey = (pool: string, name: string) => `volume:${pool}/${name}`;

/**
 * Pools (info, XML, volume list) in one virsh process. A volume the list does not show is
 * absent; one whose file matches the stat cache is known without asking libvirt; the rest
 * (vol-dumpxml costs libvirt a header read each) go to one more batch — none in a no-op.
 */
export async function observeLibvirt(virsh: Virsh, targets: LibvirtTargets, cache?: StatCache): Promise<Pick<RawObservation, 'pools' | 'volumes' | 'domains' | 'caps'>> {
  const { pools: poolNames, volumes, domains: domainNames, virtTypes, capsSignature: sig } = targets;
  // domcapabilities costs libvirt a QEMU probe on some hosts (seconds): answered from the
  // cache while the daemon and QEMU binaries are the same ones.
  const caps = new Map<string, DomainCapabilities>();
  for (const t of virtTypes) {
    const hit = sig ? cache?.get<DomainCapabilities>(domcapsCacheKey(virsh.uri, t), sig) : undefined;
    if (hit) caps.set(t, hit);
  }
  const askCaps = virtTypes.filter((t) => !caps.has(t));
  // Pools, domains and capabilities in one process; volumes only where the cache cannot answer.
  const poolReads = poolReadCommands(poolNames);
  const domainReads = domainReadCommands(domainNames);
  const first = [...poolReads, ...domainReads, ...askCaps.map(capabilitiesCommand)];
  const outputs = first.length ? await virsh.batch(first) : [];
  const pools = parsePoolReads(poolNames, outputs.slice(0, poolReads.length));
  const domains = parseDomainReads(domainNames, outputs.slice(poolReads.length, poolReads.length + domainReads.length));
  askCaps.forEach((t, i) => {
    const xml = outputs[poolReads.length + domainReads.length + i];
    if (!xml) return;
    caps.set(t, parseCapabilities(xml));
    if (sig) cache?.set(domcapsCacheKey(virsh.uri, t), sig, caps.get(t));
  });
  const vols = new Map<string, ObservedVolume | null>();
  const misses: { pool: string; name: string; sig?: string }[] = [];
  await Promise.all(
    volumes.map(async (v) => {
      const key = `${v.pool}/${v.name}`;
      const listed = pools.get(v.pool)?.volumes;
      if (!listed) return void vols.set(key, null); // pool absent or inactive: its volumes cannot be seen
      const volPath = listed.get(v.name);
      if (volPath === undefined) return void vols.set(key, null);
      const sig = await fileSignature(volPath).catch(() => undefined);
      const hit = cacheable(sig) ? cache?.get<ObservedVolume>(volumeCacheKey(v.pool, v.name), sig) : undefined;
      if (hit) vols.set(key, hit);
      else misses.push({ ...v, sig });
    }),
  );
  if (misses.length) {
    const outputs = await virsh.batch(volumeReadCommands(misses));
    await Promise.all(
      misses.map(async (v, i) => {
        const xml = outputs[i];
        const obs = xml ? parseVolumeXml(v.pool, xml) : null;
        vols.set(`${v.pool}/${v.name}`, obs);
        // Cached only if the file did not change while libvirt read it.
        if (obs && cacheable(v.sig) && (await fileSignature(obs.path).catch(() => undefined)) === v.sig) cache?.set(volumeCacheKey(v.pool, v.name), v.sig, obs);
      }),
    );
  }
  // File volumes: the file's birth time and whether the path is a symlink, looked at now
  // (never cached): ownership and "do not follow links" depend on exactly this file.
  await Promise.all(
    [...vols].map(async ([k, o]) => {
      if (o?.type !== 'file' || !o.path.startsWith('/')) return;
      const l = await lstat(o.path, { bigint: true }).catch(() => undefined);
      if (!l || !(l.isFile() || l.isSymbolicLink())) return;
      const symlink = l.isSymbolicLink() ? await readlink(o.path).catch(() => '?') : undefined;
      vols.set(k, { ...o, birth: String(l.birthtimeNs), ...(symlink !== undefined ? { symlink } : {}) });
    }),
  );
  return { pools, volumes: vols, domains, caps };
}

/** After apply made or changed a file volume: remember what libvirt reported for it. */
export async function rememberVolume(cache: StatCache | undefined, obs: ObservedVolume): Promise<void> {
  const sig = await fileSignature(obs.path).catch(() => undefined);
  if (cache && cacheable(sig)) cache.set(volumeCacheKey(obs.pool, obs.name), sig, obs);
}
