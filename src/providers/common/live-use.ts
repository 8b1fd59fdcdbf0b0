// The last look before a disk image is deleted: a running domain may still have it open even
// though its definition no longer does (a live detach that the guest has not completed, or that
// libvirt could not do: the definition changed, the running domain did not). Deleting it then
// would pull the file from under a running guest.
import { runningDomainDiskUses } from '../../tools/libvirt-domain.js';
import type { Virsh } from '../../tools/virsh.js';

/** The running domains that have this file (or pool volume) as a disk now. */
export async function runningUsersOf(v: Virsh, what: { path?: string; pool?: string; volume?: string }): Promise<string[]> {
  const uses = await runningDomainDiskUses(v);
  return [
    ...new Set(
      uses
        .filter(({ disk: d }) =>
          d.type === 'volume' ? d.source.pool === what.pool && d.source.volume === what.volume : what.path !== undefined && (d.source.file ?? d.source.dev) === what.path,
        )
        .map((u) => u.domain),
    ),
  ];
}

/** Throws (nothing is deleted) while a running domain still has it as a disk. */
export async function refuseWhileRunning(v: Virsh, what: { path?: string; pool?: string; volume?: string }, name: string): Promise<void> {
  const users = await runningUsersOf(v, what);
  if (users.length)
    throw new Error(
      `${name} is still a disk of running domain ${users.join(', ')} (its definition no longer has it; the running guest does until it is detached or restarts): not deleted; prune again after that`,
    );
}
