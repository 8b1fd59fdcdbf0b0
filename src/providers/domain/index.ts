// The storage of VMs: libvirt domains and their disks (kind "domain"): registered in providers/registry.ts.
import type { Kind } from '../../reconcile/kind.js';
import { diffVms } from './diff.js';
import { executeDomain } from './execute.js';

export const domainKind: Kind = {
  resource: 'domain',
  targets: (state, inventory) => ({
    domains: [...Object.keys(state.vms), ...Object.values(inventory.objects).flatMap((r) => (r.type === 'domain' ? [r.name] : []))],
    files: Object.values(state.vms).flatMap((vm) => vm.disks.flatMap((d) => (d.path ? [d.path] : []))),
  }),
  declared: (state) => Object.keys(state.vms).map((name) => ({ type: 'domain' as const, name })),
  diff: (i) =>
    diffVms({
      state: i.state,
      domains: i.observed.domains,
      caps: i.observed.caps,
      files: i.observed.files,
      volumes: i.observed.volumes,
      inventory: i.inventory,
      prune: i.prune,
      kvm: i.observed.kvm ?? { usable: true, virtType: 'kvm' },
      orphans: i.orphans,
      errors: i.observed.errors,
    }),
  execute: executeDomain,
};
