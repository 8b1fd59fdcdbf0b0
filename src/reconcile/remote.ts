// A libvirt connection to another host (qemu+ssh://, qemu+libssh://, qemu+tls://…): libvirt
// makes its objects there (pools, volumes — uploaded and resized through libvirt —, domains,
// secrets), but what reconcile does with files itself (qemu-img on an image file, backup
// copies and their checks, chmod of a pool's directory or a volume's file, reading a qcow2
// header) would happen on this host, to the wrong files. Those declarations are refused at
// plan time, each naming what to do instead; nothing of the plan is applied until they go.
import type { DesiredState } from './model.js';
import type { Refusal } from './plan.js';

export function remoteRefusals(state: DesiredState, uri: string): Refusal[] {
  const out: Refusal[] = [];
  const host = /^[a-z0-9+]+:\/\/([^/?]+)/i.exec(uri)?.[1]?.replace(/^[^@]*@/, '') ?? uri;
  for (const img of Object.values(state.images)) {
    const id = `images.${img.name}`;
    if (img.location.kind === 'path')
      out.push({
        id,
        message: `${img.origin}: an image file by path is made and checked with qemu-img on this host, but the connection goes to ${host}. Declare it as a pool volume there (pool: …), or run reconcile on that host (reconcile watch --host …)`,
      });
    else if (img.permissions)
      out.push({
        id,
        message: `${img.origin}: permissions of a volume on ${host} would be changed on this host's file of that name; remove permissions (libvirt sets the pool's defaults), or run reconcile on that host`,
      });
    else if (img.format === 'qcow2' && img.qcow2 && (img.qcow2.clusterSize !== undefined || img.qcow2.lazyRefcounts !== undefined || img.qcow2.compat !== undefined))
      out.push({
        id,
        message: `${img.origin}: qcow2 options libvirt does not report (clusterSize, lazyRefcounts, compat) are checked by reading the volume's header on this host, which cannot reach ${host}; remove them, or run reconcile on that host`,
      });
  }
  for (const pool of Object.values(state.pools))
    if (pool.permissions)
      out.push({
        id: `pools.${pool.name}`,
        message: `${pool.origin}: permissions of a pool's directory on ${host} would be checked and changed on this host; remove them, or run reconcile on that host`,
      });
  for (const b of Object.values(state.backups))
    out.push({
      id: `backups.${b.name}`,
      message: `${b.origin}: backups are copied, checked and restored as files on the host of the VM (${host}); run reconcile on that host for backups`,
    });
  return out;
}
