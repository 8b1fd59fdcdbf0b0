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
  const done = await v.exec(['domjobinfo', domain, '--completed']).catch(() => '');
  if (/Job type:\s+Failed/.test(done)) throw new Error(`${what} of ${domain} failed: ${done.trim().split('\n').slice(0, 3).join(' / ')}`);
}

/** A LUKS target made with the libvirt secret of this usage (the disk's own: the same passphrase). */
const luks = (secretUsage: string | undefined) => (secretUsage ? { '@format': 'luks', secret: { '@type': 'passphrase', '@usage': secretUsage } } : undefined);

/**
 * A push backup of a running domain: the named disks copied into qcow2 files the caller made
 * (at the disks' size) while it runs. An encrypted disk's copy is encrypted too (LUKS in
 * qcow2, opened with the disk's own secret: its passphrase).
 */
export async function pushBackup(v: Virsh, domain: string, disks: { target: string; file: string; secretUsage?: string }[], all: string[]): Promise<void> {
  const want = new Map(disks.map((d) => [d.target, d]));
  const xml = buildXml({
    domainbackup: {
      '@mode': 'push',
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
  // --reuse-external: the caller made the target files (see backups/backup.ts).
  await withTempFile(xml, (f) => v.exec(['backup-begin', domain, f, '--reuse-external']));
  await waitForJob(v, domain, 'backup');
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
