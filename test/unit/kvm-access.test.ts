// Pure decisions about KVM: who QEMU runs as, and whether that user can open /dev/kvm.
import { describe, expect, it } from 'vitest';
import { canReadWrite, decideKvm, parseQemuConf, resolveRunAs } from '../../src/providers/domain/kvm-access.js';

const PASSWD =
  'root:x:0:0:root:/root:/bin/bash\nlibvirt-qemu:x:64055:107:Libvirt Qemu,,,:/var/lib/libvirt:/usr/sbin/nologin\nqemu:x:107:107::/:/sbin/nologin\nbob:x:1000:1000::/home/bob:/bin/sh\n';
const GROUP = 'root:x:0:\nkvm:x:107:\nlibvirt-qemu:x:64055:libvirt-qemu\nlibvirt:x:108:bob\nbob:x:1000:\n';
const names = { owner: 'root', group: 'kvm' };

describe('canReadWrite', () => {
  const cases: { reason: string; dev: { mode: number; uid: number; gid: number }; who: { uid: number; gids: number[] }; want: boolean }[] = [
    { reason: 'root opens anything', dev: { mode: 0o600, uid: 0, gid: 0 }, who: { uid: 0, gids: [0] }, want: true },
    { reason: 'root-only node: the QEMU user cannot', dev: { mode: 0o600, uid: 0, gid: 0 }, who: { uid: 64055, gids: [107, 64055] }, want: false },
    { reason: 'root:kvm 0660 and the user is in kvm', dev: { mode: 0o660, uid: 0, gid: 107 }, who: { uid: 64055, gids: [107] }, want: true },
    { reason: 'root:kvm 0640: group may read but not write', dev: { mode: 0o640, uid: 0, gid: 107 }, who: { uid: 64055, gids: [107] }, want: false },
    { reason: 'root:kvm 0660, user not in kvm, other bits 0', dev: { mode: 0o660, uid: 0, gid: 107 }, who: { uid: 1000, gids: [1000] }, want: false },
    { reason: 'world read-write node', dev: { mode: 0o666, uid: 0, gid: 0 }, who: { uid: 1000, gids: [1000] }, want: true },
    { reason: 'owner bits apply to the owner, even if the group bits would allow', dev: { mode: 0o066, uid: 1000, gid: 1000 }, who: { uid: 1000, gids: [1000] }, want: false },
  ];
  for (const c of cases) it(c.reason, () => expect(canReadWrite(c.dev, c.who)).toBe(c.want));
});

describe('resolveRunAs', () => {
  it('unset user and group: Debian libvirt-qemu with its primary group kvm and supplementary groups', () => {
    expect(resolveRunAs({}, PASSWD, GROUP)).toEqual({ name: 'libvirt-qemu', uid: 64055, gids: [107, 64055], groupName: 'kvm' });
  });
  it('qemu.conf user and group by name', () => {
    expect(resolveRunAs(parseQemuConf('#user = "root"\nuser = "bob"\ngroup = "libvirt"\n'), PASSWD, GROUP)).toEqual({
      name: 'bob',
      uid: 1000,
      gids: [108, 1000],
      groupName: 'libvirt',
    });
  });
  it('+N means a numeric id', () => {
    expect(resolveRunAs({ user: '+0', group: '+0' }, PASSWD, GROUP)?.uid).toBe(0);
  });
  it('an unknown user is not guessed', () => {
    expect(resolveRunAs({ user: 'nobody-here' }, PASSWD, GROUP)).toBeUndefined();
  });
});

describe('decideKvm', () => {
  const who = resolveRunAs({}, PASSWD, GROUP);
  it('no /dev/kvm: TCG, saying why', () => {
    const d = decideKvm(undefined, who, names);
    expect(d).toMatchObject({ usable: false, virtType: 'qemu' });
    expect(!d.usable && d.reason).toMatch(/\/dev\/kvm does not exist/);
  });
  it('root-only /dev/kvm: TCG, with the reason and the fix', () => {
    const d = decideKvm({ mode: 0o20600, uid: 0, gid: 0 }, who, { owner: 'root', group: 'root' });
    expect(d.usable).toBe(false);
    if (d.usable) return;
    expect(d.reason).toBe("/dev/kvm is root:root 0600, which QEMU's user libvirt-qemu:kvm cannot open");
    expect(d.fix).toMatch(/chgrp kvm \/dev\/kvm && chmod 0660 \/dev\/kvm/);
  });
  it('root:kvm 0660: kvm', () => {
    expect(decideKvm({ mode: 0o20660, uid: 0, gid: 107 }, who, names)).toEqual({ usable: true, virtType: 'kvm' });
  });
});
