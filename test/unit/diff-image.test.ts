// Image files: the pure diff, case by case (model: crossplane's reconciler_test.go tables).
import { describe, expect, it } from 'vitest';
import { check, diff, GiB, image, imageRecord, MiB, type Case } from './fixtures.js';

const A = '/vr-test/a.qcow2';
const one = (decl: string) => `version: 1\nimages:\n  a: ${decl}\n`;
const ours = image(A);
const adopted = image(A);
const bigger = image(A, { virtualSize: 2 * GiB });
const raw = image(A, { driver: 'raw', qcow2: undefined, clusterSize: undefined });
const base = image('/vr-test/base.raw');
const top = image('/vr-test/top.qcow2', { backing: '/vr-test/base.raw', backingFormat: 'qcow2' });

const cases: (Case & { want: (string | RegExp)[]; notes?: RegExp[] })[] = [
  { reason: 'an absent image is created', yaml: one(`{ path: ${A}, size: 1G }`), absent: [A], want: ['create images.a new'] },
  {
    reason: 'an adopted image that matches is in sync, and marked as not ours',
    yaml: one(`{ path: ${A}, size: 1G, adopt: true }`),
    files: [adopted],
    want: ['no-op images.a in-sync-adopted'],
  },
  {
    reason: 'an existing file reconcile did not create is refused without adopt',
    yaml: one(`{ path: ${A}, size: 1G }`),
    files: [adopted],
    want: [/^refused images\.a: .*exists and reconcile did not create it/],
  },
  { reason: 'our image grows in place', yaml: one(`{ path: ${A}, size: 2G }`), files: [ours], inventory: [imageRecord('a', ours)], want: ['update images.a drift'] },
  {
    reason: 'a smaller size is a refused shrink',
    yaml: one(`{ path: ${A}, size: 512M }`),
    files: [bigger],
    inventory: [imageRecord('a', bigger)],
    want: [/^refused images\.a: .*smaller than the image .*shrinking an image destroys data/],
  },
  {
    reason: 'a format change needs --allow-replace',
    yaml: one(`{ path: ${A}, size: 1G }`),
    files: [raw],
    inventory: [imageRecord('a', raw)],
    want: [/^refused images\.a: .*must be rebuilt \(format raw -> qcow2\).*--allow-replace/],
  },
  {
    reason: 'with --allow-replace a format change is a destructive replace',
    yaml: one(`{ path: ${A}, size: 1G }`),
    files: [raw],
    inventory: [imageRecord('a', raw)],
    allowReplace: true,
    want: ['replace images.a rebuild destructive'],
  },
  {
    reason: 'protect: true refuses a replace even with --allow-replace',
    yaml: one(`{ path: ${A}, size: 1G, protect: true }`),
    files: [raw],
    inventory: [imageRecord('a', raw)],
    allowReplace: true,
    want: [/^refused images\.a: .*would be replaced .*protect: true/],
  },
  {
    reason: 'an adopted image keeps options its declaration does not set',
    yaml: one(`{ path: ${A}, adopt: true }`),
    files: [raw],
    want: ['no-op images.a in-sync-adopted'],
    notes: [/adopted .* keeps its format raw/],
  },
  {
    reason: 'a changed creation option only qemu-img reports is a replace',
    yaml: one(`{ path: ${A}, size: 1G, qcow2: { clusterSize: 128K } }`),
    files: [ours],
    inventory: [imageRecord('a', ours)],
    want: [/refused images\.a: .*qcow2\.clusterSize 64 KiB -> 128 KiB/],
  },
  {
    reason: 'a recorded option (preallocation) that changed is a replace',
    yaml: one(`{ path: ${A}, size: 1G, qcow2: { preallocation: falloc } }`),
    files: [ours],
    inventory: [imageRecord('a', ours)],
    want: [/refused images\.a: .*qcow2\.preallocation off -> falloc/],
  },
  {
    reason: 'mode drift on our image is put back in place',
    yaml: one(`{ path: ${A}, size: 1G, permissions: { mode: "0640" } }`),
    files: [ours],
    inventory: [imageRecord('a', ours)],
    want: ['update images.a drift'],
  },
  {
    reason: 'a base is never rebuilt under its overlay',
    yaml: `version: 1\nimages:\n  base: { path: /vr-test/base.raw, format: raw, size: 1G }\n  top: { path: /vr-test/top.qcow2, source: { backing: base } }\n`,
    files: [base, top],
    inventory: [imageRecord('base', base), imageRecord('top', top, { source: 'backing:base' })],
    allowReplace: true,
    want: ['no-op images.top in-sync', /^refused images\.base: .*must be rebuilt \(format qcow2 -> raw\), but images\.top is an overlay on it and would be corrupted/],
  },
];

const gone = image('/vr-test/old.qcow2');
const someoneElses = image('/vr-test/old.qcow2');
const pruneCases: (Case & { want: (string | RegExp)[]; notes?: RegExp[] })[] = [
  {
    reason: 'without --prune an image that left the YAML is only noted',
    yaml: 'version: 1\n',
    files: [gone],
    inventory: [imageRecord('old', gone)],
    want: [],
    notes: [/left the YAML; `apply --prune` deletes it/],
  },
  {
    reason: 'with --prune our image that left the YAML is deleted (destructive)',
    yaml: 'version: 1\n',
    files: [gone],
    inventory: [imageRecord('old', gone)],
    prune: true,
    want: ['delete inventory:image:/vr-test/old.qcow2 left-yaml destructive'],
  },
  {
    reason: 'a file that took its place is forgotten, never deleted',
    yaml: 'version: 1\n',
    files: [someoneElses],
    inventory: [imageRecord('old', gone)],
    prune: true,
    want: ['delete inventory:image:/vr-test/old.qcow2 not-ours'],
  },
  {
    reason: 'an image already gone is only forgotten',
    yaml: 'version: 1\n',
    absent: ['/vr-test/old.qcow2'],
    inventory: [imageRecord('old', gone)],
    prune: true,
    want: ['delete inventory:image:/vr-test/old.qcow2 gone'],
  },
  {
    reason: 'a base still used by a declared overlay is not pruned',
    yaml: 'version: 1\nimages:\n  top: { path: /vr-test/top.qcow2, adopt: true }\n',
    prune: true,
    files: [gone, image('/vr-test/top.qcow2', { backing: '/vr-test/old.qcow2' })],
    inventory: [imageRecord('old', gone)],
    want: ['no-op images.top in-sync-adopted', /^refused inventory:image:\/vr-test\/old\.qcow2: .*still use it as backing file/],
  },
];

describe('image diff', () => {
  it.each([...cases, ...pruneCases])('$reason', check);

  it('a create lists every value it sets, and a grow says from and to', () => {
    const create = diff({ reason: '', yaml: one(`{ path: ${A}, size: 1G, qcow2: { clusterSize: 128K, compression: zstd } }`), absent: [A] }).actions[0]!;
    expect(create.changes).toEqual(
      expect.arrayContaining([
        { field: 'format', from: '', to: 'qcow2' },
        { field: 'qcow2.clusterSize', from: '', to: '128 KiB' },
        { field: 'qcow2.compression', from: '', to: 'zstd' },
        { field: 'size', from: '', to: '1 GiB' },
        { field: 'mode', from: '', to: '0600' },
      ]),
    );
    const grow = diff({ reason: '', yaml: one(`{ path: ${A}, size: 1536M }`), files: [ours], inventory: [imageRecord('a', ours)] }).actions[0]!;
    expect(grow.changes).toEqual([{ field: 'size', from: '1 GiB', to: '1536 MiB' }]);
    expect(1536 * MiB).toBeGreaterThan(GiB);
  });
});
