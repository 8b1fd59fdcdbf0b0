// Can the QEMU processes libvirt starts use KVM? libvirt runs them as qemu.conf's
// user/group (Debian: libvirt-qemu, whose groups include kvm), so /dev/kvm existing is not
// enough: a root:root 0600 node (no udev, as in many containers and minimal VMs) exists,
// yet a kvm domain cannot start there, and libvirt re-probes QEMU at every capabilities
// call. New domains are defined as kvm only when that user can open the device read-write.
import { readFile, stat } from 'node:fs/promises';
import { isRemoteUri, type Virsh } from '../../tools/virsh.js';
import { kvmRefusal } from '../../tools/libvirt-domain.js';

export const KVM_DEVICE = '/dev/kvm';
const QEMU_CONF = '/etc/libvirt/qemu.conf';

export interface DeviceNode {
  mode: number;
  uid: number;
  gid: number;
}

export interface RunAs {
  name: string;
  uid: number;
  /** primary group and every supplementary group the process gets (libvirt sets them all) */
  gids: number[];
  groupName: string;
}

export type KvmAccess = { usable: true; virtType: 'kvm' } | { usable: false; virtType: 'qemu'; reason: string; fix?: string };

/** Pure: may a process running as `who` open the device read-write? (root always may) */
export function canReadWrite(dev: DeviceNode, who: { uid: number; gids: number[] }): boolean {
  if (who.uid === 0) return true;
  const bits = who.uid === dev.uid ? (dev.mode >> 6) & 7 : who.gids.includes(dev.gid) ? (dev.mode >> 3) & 7 : dev.mode & 7;
  return (bits & 6) === 6;
}

/** Pure: `user = "..."` and `group = "..."` of a qemu.conf (comments and other keys ignored). */
export function parseQemuConf(text: string): { user?: string; group?: string } {
  const out: { user?: string; group?: string } = {};
  for (const line of text.split('\n')) {
    const m = /^\s*(user|group)\s*=\s*"([^"]*)"/.exec(line);
    if (m) out[m[1] as 'user' | 'group'] = m[2];
  }
  return out;
}

interface Account {
  name: string;
  id: number;
  gid?: number;
  members?: string[];
}

function parseColonFile(text: string, kind: 'passwd' | 'group'): Account[] {
  return text
    .split('\n')
    .filter((l) => l && !l.startsWith('#'))
    .map((l) => {
      const f = l.split(':');
      return kind === 'passwd' ? { name: f[0]!, id: Number(f[2]), gid: Number(f[3]) } : { name: f[0]!, id: Number(f[2]), members: (f[3] ?? '').split(',').filter(Boolean) };
    });
}

/** Pure: who QEMU runs as, from qemu.conf and the account databases. */
export function resolveRunAs(conf: { user?: string; group?: string }, passwd: string, group: string): RunAs | undefined {
  const users = parseColonFile(passwd, 'passwd');
  const groups = parseColonFile(group, 'group');
  const byId = (list: Account[], v: string) =>
    v.startsWith('+') ? (list.find((a) => a.id === Number(v.slice(1))) ?? { name: v, id: Number(v.slice(1)) }) : list.find((a) => a.name === v);
  // Unset user: the distribution's build default (Debian libvirt-qemu, Fedora qemu).
  const user = conf.user !== undefined ? byId(users, conf.user) : (users.find((u) => u.name === 'libvirt-qemu') ?? users.find((u) => u.name === 'qemu'));
  if (!user) return undefined;
  const primary = conf.group !== undefined ? byId(groups, conf.group)?.id : user.gid;
  if (primary === undefined) return undefined;
  const supplementary = groups.filter((g) => g.members?.includes(user.name)).map((g) => g.id);
  const gids = [...new Set([primary, ...(user.gid !== undefined ? [user.gid] : []), ...supplementary])];
  return { name: user.name, uid: user.id, gids, groupName: groups.find((g) => g.id === primary)?.name ?? String(primary) };
}

const octal = (m: number) => `0${(m & 0o777).toString(8)}`;

/** Pure: the decision and, when KVM is not usable, why and how to fix it. */
export function decideKvm(dev: DeviceNode | undefined, who: RunAs | undefined, names: { owner: string; group: string }): KvmAccess {
  if (!dev) {
    return {
      usable: false,
      virtType: 'qemu',
      reason: `${KVM_DEVICE} does not exist (no hardware virtualisation, or the kvm module is not loaded)`,
      fix: 'load kvm_intel or kvm_amd if the CPU supports it',
    };
  }
  if (!who) {
    return { usable: false, virtType: 'qemu', reason: `the user QEMU runs as (qemu.conf user/group) is not known on this host` };
  }
  if (canReadWrite(dev, who)) return { usable: true, virtType: 'kvm' };
  return {
    usable: false,
    virtType: 'qemu',
    reason: `${KVM_DEVICE} is ${names.owner}:${names.group} ${octal(dev.mode)}, which QEMU's user ${who.name}:${who.groupName} cannot open`,
    fix: `give it the group and mode udev's rule would: chgrp kvm ${KVM_DEVICE} && chmod 0660 ${KVM_DEVICE} (domains defined after that use KVM)`,
  };
}

/**
 * The decision for the daemon a URI names. Local system connections are checked against
 * this host's qemu.conf and /dev/kvm; a session daemon runs QEMU as the caller; a remote
 * daemon cannot be inspected from here, so KVM is assumed, as libvirt itself would.
 */
export async function kvmAccess(uri: string, virsh?: Virsh): Promise<KvmAccess> {
  // A daemon on another host is asked whether it offers KVM (its /dev/kvm is not here to look at).
  if (isRemoteUri(uri)) {
    if (!virsh) return { usable: true, virtType: 'kvm' };
    const refused = await kvmRefusal(virsh);
    return refused === undefined ? { usable: true, virtType: 'kvm' } : { usable: false, virtType: 'qemu', reason: `the libvirt host offers no KVM (${refused})` };
  }
  const dev = await stat(KVM_DEVICE).then(
    (s) => ({ mode: s.mode, uid: s.uid, gid: s.gid }),
    () => undefined,
  );
  const [conf, passwd, group] = await Promise.all([QEMU_CONF, '/etc/passwd', '/etc/group'].map((f) => readFile(f, 'utf8').catch(() => '')));
  const who = /\/session\b/.test(uri)
    ? {
        name: String(process.getuid?.() ?? 0),
        uid: process.getuid?.() ?? 0,
        gids: [process.getgid?.() ?? 0, ...(process.getgroups?.() ?? [])],
        groupName: String(process.getgid?.() ?? 0),
      }
    : resolveRunAs(parseQemuConf(conf!), passwd!, group!);
  const name = (list: string, id: number) =>
    list
      .split('\n')
      .find((l) => l.split(':')[2] === String(id))
      ?.split(':')[0] ?? String(id);
  return decideKvm(dev, who, { owner: dev ? name(passwd!, dev.uid) : '', group: dev ? name(group!, dev.gid) : '' });
}
