// Snapshots and backups of libvirt domains: internal snapshots, push backups (backup-begin),
// disk-only external snapshots merged back with blockcommit, guest filesystem freeze.
import { buildXml } from './xml.js';
import { withTempFile } from './scratch.js';
import { libvirtMessage, type Virsh } from './virsh.js';

export async function domainState(v: Virsh, domain: string): Promise<string> {
  return (await v.exec(['domstate', domain])).trim();
}

export async function createInternalSnapshot(v: Virsh, domain: string, name: string, description: string): Promise<void> {
  await v.exec(['snapshot-create-as', domain, name, '--description', description, '--atomic']);
}

export async function deleteSnapshot(v: Virsh, domain: string, name: string): Promise<void> {
  await v.exec(['snapshot-delete', domain, name]);
}

export async function revertSnapshot(v: Virsh, domain: string, name: string): Promise<void> {
  await v.exec(['snapshot-revert', domain, name]);
}

/** Freezes guest filesystems through the guest agent; says so plainly when there is none. */
export async function freeze(v: Virsh, domain: string): Promise<void> {
  try {
    await v.exec(['domfsfreeze', domain]);
  } catch (e) {
    throw new Error(`quiesce needs the QEMU guest agent running in ${domain}: ${libvirtMessage(e)}`);
  }
}

export async function thaw(v: Virsh, domain: string): Promise<void> {
  await v.exec(['domfsthaw', domain]);
}

async function waitForJob(v: Virsh, domain: string, what: string): Promise<void> {
  for (;;) {
    const info = await v.exec(['domjobinfo', domain]);
    if (/Job type:\s+None/.test(info)) break;
    await new Promise((r) => setTimeout(r, 200));
  }
  const failure = jobFailure(await v.exec(['domjobinfo', domain, '--completed']).catch((e: Error) => `Job type: unknown (${e.message})`));
  if (failure) throw new Error(`${what} of ${domain} did not complete: ${failure}`);
}

/**
 * Why a finished job did not complete, from `domjobinfo --completed`; undefined when it did.
 * Only "Completed" is a success: a cancelled job (domjobabort, or QEMU's own) left its copy
 * short, and one whose outcome cannot be read is not taken as made.
 */
export function jobFailure(completed: string): string | undefined {
  const type = /Job type:\s+(\S+)/.exec(completed)?.[1];
  if (type === 'Completed') return undefined;
  const detail = completed
    .trim()
    .split('\n')
    .filter((l) => /Job type|Operation|Error/i.test(l))
    .map((l) => l.replace(/\s+/g, ' ').trim())
    .join(' / ');
  return detail || `libvirt reported no outcome (${type ?? 'no job type'})`;
}

/** A LUKS target made with the libvirt secret of this usage (the disk's own: the same passphrase). */
const luks = (secretUsage: string | undefined) => (secretUsage ? { '@format': 'luks', secret: { '@type': 'passphrase', '@usage': secretUsage } } : undefined);

/**
 * A push backup of a running domain: the named disks copied into qcow2 files the caller made
 * (at the disks' size) while it runs. An encrypted disk's copy is encrypted too (LUKS in
 * qcow2, opened with the disk's own secret: its passphrase).
 */
export async function pushBackup(
  v: Virsh,
  domain: string,
  disks: { target: string; file: string; secretUsage?: string }[],
  all: string[],
  /**
   * checkpoint: a libvirt checkpoint of this name is made at the instant of the backup (a dirty
   * bitmap in each backed-up qcow2 disk); incremental: only what changed since that earlier
   * checkpoint is copied (the target holds just those clusters).
   */
  o: { checkpoint?: string; incremental?: string } = {},
): Promise<void> {
  const want = new Map(disks.map((d) => [d.target, d]));
  const xml = buildXml({
    domainbackup: {
      '@mode': 'push',
      ...(o.incremental ? { incremental: o.incremental } : {}),
      disks: {
        disk: all.map((t) => {
          const d = want.get(t);
          return d
            ? { '@name': t, '@backup': 'yes', '@type': 'file', target: { '@file': d.file, encryption: luks(d.secretUsage) }, driver: { '@type': 'qcow2' } }
            : { '@name': t, '@backup': 'no' };
        }),
      },
    },
  });
  const checkpoint = o.checkpoint
    ? buildXml({ domaincheckpoint: { name: o.checkpoint, disks: { disk: all.map((t) => ({ '@name': t, '@checkpoint': want.has(t) ? 'bitmap' : 'no' })) } } })
    : undefined;
  // --reuse-external: the caller made the target files (see backups/backup.ts).
  await withTempFile(xml, (f) =>
    checkpoint ? withTempFile(checkpoint, (c) => v.exec(['backup-begin', domain, f, c, '--reuse-external'])) : v.exec(['backup-begin', domain, f, '--reuse-external']),
  );
  await waitForJob(v, domain, 'backup');
}

/** The names of the domain's libvirt checkpoints. */
export async function listCheckpoints(v: Virsh, domain: string): Promise<string[]> {
  return (await v.exec(['checkpoint-list', domain, '--name']))
    .split('\n')
    .map((l) => l.trim())
    .filter(Boolean);
}

/** Deletes a checkpoint (libvirt merges its bitmap into its parent's); the domain must be running. */
export async function deleteCheckpoint(v: Virsh, domain: string, name: string, o: { metadataOnly?: boolean } = {}): Promise<void> {
  await v.exec(['checkpoint-delete', domain, name, ...(o.metadataOnly ? ['--metadata'] : [])]);
}

/** Whether the domain has a managed save image (starting it would resume that saved guest). */
export async function hasManagedSave(v: Virsh, domain: string): Promise<boolean> {
  return /^Managed save:\s+yes/m.test(await v.exec(['dominfo', domain]));
}

/**
 * Starts a shut-off domain paused: QEMU opens its disks, the guest never runs an instruction
 * (as Proxmox's vzdump does for a stopped VM), so a push backup and checkpoints can be made.
 */
export async function startPaused(v: Virsh, domain: string): Promise<string> {
  await v.exec(['start', domain, '--paused']);
  return domainId(v, domain);
}

/** The id of the domain's running instance (each start gets a new one); '-' when shut off. */
export async function domainId(v: Virsh, domain: string): Promise<string> {
  return (await v.exec(['domid', domain])).trim();
}

export async function startDomain(v: Virsh, domain: string): Promise<void> {
  await v.exec(['start', domain]);
}

/** Stops a domain at once (after startPaused: nothing of its guest ran); an abandoned backup job goes with it. */
export async function destroyDomain(v: Virsh, domain: string): Promise<void> {
  await v.exec(['destroy', domain]);
}

/** The persistent definition, as `virsh define` takes it back (no --security-info: no passwords). */
export async function inactiveXml(v: Virsh, domain: string): Promise<string> {
  return v.exec(['dumpxml', '--inactive', domain]);
}

/** Aborts the domain's backup job if one is under way (one whose caller was killed goes on otherwise). */
export async function abortBackupJob(v: Virsh, domain: string): Promise<void> {
  const info = await v.exec(['domjobinfo', domain]).catch(() => '');
  if (/Job type:\s+(Unbounded|Bounded)/.test(info) && /Operation:\s+Backup/.test(info)) await v.exec(['domjobabort', domain]).catch(() => undefined);
}

/**
 * Disk-only external snapshot: the guest now writes to overlays, so its base images are
 * quiet and can be copied; `copy` runs then, and blockcommit --active --pivot merges each
 * overlay back so the domain is left with exactly the images it had. The overlay of an
 * encrypted disk is encrypted with its secret (the guest's writes never reach a disk in clear).
 */
export async function withExternalSnapshot(
  v: Virsh,
  domain: string,
  name: string,
  disks: { target: string; overlay: string; secretUsage?: string }[],
  all: string[],
  copy: () => Promise<void>,
): Promise<void> {
  const xml = buildXml({
    domainsnapshot: {
      name,
      disks: {
        disk: all.map((t) => {
          const d = disks.find((x) => x.target === t);
          return d ? { '@name': t, '@snapshot': 'external', '@type': 'file', source: { '@file': d.overlay, encryption: luks(d.secretUsage) } } : { '@name': t, '@snapshot': 'no' };
        }),
      },
    },
  });
  await withTempFile(xml, (f) => v.exec(['snapshot-create', domain, f, '--disk-only', '--atomic', '--no-metadata']));
  try {
    await copy();
  } finally {
    for (const d of disks) await v.exec(['blockcommit', domain, d.target, '--active', '--pivot', '--wait']);
  }
}

/** Shuts the domain down (ACPI, then destroy after the grace period) and waits until it is off. */
export async function shutOff(v: Virsh, domain: string, graceSeconds = 30): Promise<void> {
  if ((await domainState(v, domain)) === 'shut off') return;
  await v.exec(['shutdown', domain]).catch(() => undefined);
  const end = Date.now() + graceSeconds * 1000;
  while (Date.now() < end) {
    if ((await domainState(v, domain)) === 'shut off') return;
    await new Promise((r) => setTimeout(r, 500));
  }
  await v.exec(['destroy', domain]);
}
