// Reconcile's record inside a domain's <metadata>: trusted only for the domain it was written for.
import { describe, expect, it } from 'vitest';
import { parseOwnership } from '../../src/tools/libvirt-domain.js';

const META = (attrs: string) =>
  `<domain><uuid>u-1</uuid><metadata><vr:storage xmlns:vr="https://virt-reconcile.dev/xmlns/storage/1"${attrs}><vr:created/><vr:disk target="vda"/></vr:storage></metadata></domain>`;

describe('ownership metadata', () => {
  it.each([
    { reason: 'written for this domain: it is ours, with the disks it attached', xml: META(' domain="u-1"'), want: { created: true, disks: ['vda'] } },
    { reason: 'copied into another domain (virt-clone): proves nothing', xml: META(' domain="u-0"'), want: { created: false, disks: [] } },
    { reason: 'written before records named their domain: taken as it is', xml: META(''), want: { created: true, disks: ['vda'] } },
    { reason: 'no record at all', xml: '<domain><uuid>u-1</uuid></domain>', want: { created: false, disks: [] } },
  ])('$reason', ({ xml, want }) => expect(parseOwnership(xml, 'u-1')).toEqual(want));
});
