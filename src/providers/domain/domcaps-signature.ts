// What libvirt's domcapabilities answer depends on: the daemon, the QEMU binaries it
// probes and whether KVM is usable. Their identities key the cached answer, so it is asked
// once and asked again only after an upgrade (or a /dev/kvm change), never at every plan.
import { stat } from 'node:fs/promises';

const BINARIES = ['/usr/sbin/libvirtd', '/usr/sbin/virtqemud', '/usr/bin/qemu-system-x86_64', '/usr/bin/qemu-system-aarch64', '/usr/bin/qemu-system-i386', '/usr/libexec/qemu-kvm'];

export async function domcapsSignature(kvmUsable: boolean): Promise<string> {
  const ids = await Promise.all(
    BINARIES.map((b) =>
      stat(b, { bigint: true }).then(
        (s) => `${b}=${s.dev}:${s.ino}:${s.size}:${s.mtimeNs}`,
        () => `${b}=-`,
      ),
    ),
  );
  return `${ids.join(',')};kvm=${kvmUsable}`;
}

export const domcapsCacheKey = (uri: string, virtType: string) => `domcaps:${uri}:${virtType}`;
