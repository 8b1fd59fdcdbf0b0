// Pure: reading virsh vol-list's table when names and paths hold spaces.
import { describe, expect, it } from 'vitest';
import { parseVolList } from '../../src/tools/libvirt-pool.js';

describe('parseVolList', () => {
  const cases: { reason: string; out: string; poolPath?: string; want: [string, string][] }[] = [
    {
      reason: 'plain names',
      out: ' a.qcow2   /p/a.qcow2\n b.img     /p/b.img\n',
      poolPath: '/p',
      want: [
        ['a.qcow2', '/p/a.qcow2'],
        ['b.img', '/p/b.img'],
      ],
    },
    { reason: 'a pool path with spaces', out: ' a.qcow2   /srv/my pool/a.qcow2\n', poolPath: '/srv/my pool', want: [['a.qcow2', '/srv/my pool/a.qcow2']] },
    { reason: 'a volume name with spaces', out: ' b c.img   /srv/my pool/b c.img\n', poolPath: '/srv/my pool', want: [['b c.img', '/srv/my pool/b c.img']] },
    { reason: 'block pools: the path starts at the first slash', out: ' lv one   /dev/vg/lv one\n', want: [['lv one', '/dev/vg/lv one']] },
    { reason: 'rbd: pool/name paths', out: ' disk1   rbdpool/disk1\n', want: [['disk1', 'rbdpool/disk1']] },
  ];
  for (const c of cases) it(c.reason, () => expect([...parseVolList(c.out, c.poolPath)]).toEqual(c.want));
});
