// Between plan and apply (a confirmation prompt can wait for minutes) someone may undefine a
// pool or domain reconcile made and define their own under the same name. Deletes and changes
// act on the object the plan saw (its uuid), never on whatever now carries the name.
import { quietProgress } from '../src/progress/progress.js';
import { randomUUID } from 'node:crypto';
import { mkdir, readFile } from 'node:fs/promises';
import path from 'node:path';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { startPrivateLibvirtd, type PrivateLibvirtd } from '../src/dev/private-libvirtd.js';
import { executeDomain } from '../src/providers/domain/execute.js';
import { executePool } from '../src/providers/pool/execute.js';
import type { ExecContext } from '../src/reconcile/kind.js';
import type { Action, Operation } from '../src/reconcile/plan.js';
import { connect } from '../src/tools/virsh.js';
import { cli, sandbox, virsh, type Sandbox } from './helpers.js';

let lv: PrivateLibvirtd;
let sb: Sandbox;
beforeAll(async () => {
  lv = await startPrivateLibvirtd();
  sb = await sandbox('recheck', { libvirt: lv });
});
afterAll(async () => {
  await lv?.stop();
  await sb?.cleanup();
});

const logs: string[] = [];
const ctx = (): ExecContext => ({
  virsh: () => connect(lv.uri),
  log: (l) => logs.push(l),
  stateDir: sb.stateDir,
  progress: quietProgress,
  atEnd: () => undefined,
  inventory: { get: () => undefined, set: async () => undefined, forget: async () => undefined },
});
const action = (resource: Action['resource'], id: string, op: Operation & Record<string, unknown>): Action => ({
  id,
  resource,
  kind: 'delete',
  code: 'left-yaml',
  reason: '',
  destructive: true,
  changes: [],
  dependsOn: [],
  op,
});

describe('acting on the object the plan saw', () => {
  it('a pool defined by someone else under the name is neither deleted nor replaced', async () => {
    const dir = path.join(sb.dir, 'theirs');
    await mkdir(dir);
    await virsh(lv, 'pool-define-as', 'swapped', 'dir', '--target', dir);
    const planned = randomUUID(); // the uuid of the pool reconcile made, gone since
    const effect = await executePool(
      action('pool', 'inventory:pool:swapped', { type: 'pool.delete', name: 'swapped', uuid: planned, poolType: 'dir', active: false, exists: true, inventoryKey: 'pool:swapped' }),
      ctx(),
    );
    expect(effect).toEqual({ forget: 'pool:swapped' });
    expect(logs.join('\n')).toMatch(/not deleted: the pool named swapped is no longer the one the plan saw \(another uuid\); forgotten/);
    expect(await virsh(lv, 'pool-list', '--all', '--name')).toMatch(/swapped/);
    await expect(
      executePool(
        action('pool', 'pools.swapped', {
          type: 'pool.replace',
          name: 'swapped',
          uuid: planned,
          definition: { type: 'dir', path: dir, source: { hosts: [] } },
          active: false,
          autostart: false,
        }),
        ctx(),
      ),
    ).rejects.toThrow(/the pool named swapped is no longer the one the plan saw/);
    expect(await virsh(lv, 'pool-dumpxml', 'swapped')).toContain(dir);
  });

  it('a domain defined by someone else under the name is neither undefined nor changed', async () => {
    await virsh(lv, 'define', await sb.yaml("<domain type='qemu'><name>swapped-dom</name><memory unit='MiB'>64</memory><os><type>hvm</type></os></domain>\n", 'theirs.xml'));
    const planned = randomUUID();
    const effect = await executeDomain(
      action('domain', 'inventory:domain:swapped-dom', { type: 'domain.undefine', name: 'swapped-dom', uuid: planned, exists: true, inventoryKey: 'domain:swapped-dom' }),
      ctx(),
    );
    expect(effect).toEqual({ forget: 'domain:swapped-dom' });
    expect(await virsh(lv, 'list', '--all', '--name')).toMatch(/swapped-dom/);
    await expect(
      executeDomain(
        action('domain', 'vms.swapped-dom', { type: 'domain.disks', name: 'swapped-dom', uuid: planned, running: false, steps: [], ownership: { created: true, disks: [] } }),
        ctx(),
      ),
    ).rejects.toThrow(/domain swapped-dom is no longer the one the plan saw/);
    await virsh(lv, 'undefine', 'swapped-dom');
  });
});

describe('another libvirt connection', () => {
  it('objects recorded under one connection are never forgotten or pruned from another', async () => {
    const other = await startPrivateLibvirtd();
    const own = await sandbox('recheck-uri', { libvirt: lv });
    try {
      await own.yaml('version: 1\npools:\n  here: { type: dir, path: $DIR/here }\nimages:\n  v: { pool: here, size: 4M }\n');
      expect((await own.run('apply')).code).toBe(0);
      const before = await readFile(path.join(own.stateDir, 'inventory.json'), 'utf8');
      // The same files and state directory, but pointed at another daemon.
      const wrong = await cli(['destroy', '-f', path.join(own.dir, 'storage.yaml'), '--state-dir', own.stateDir, '--connect', other.uri], {}, other.nsenter);
      expect(wrong.code).toBe(1);
      expect(wrong.stderr).toMatch(new RegExp(`inventory:pool:here: recorded as made through ${literal(lv.uri)}, but this run is connected to ${literal(other.uri)}`));
      expect(await readFile(path.join(own.stateDir, 'inventory.json'), 'utf8')).toBe(before);
      expect(await virsh(lv, 'pool-list', '--all', '--name')).toMatch(/here/);
      const right = await own.run('destroy');
      expect(right.code, right.stderr).toBe(0);
      expect(await virsh(lv, 'pool-list', '--all', '--name')).not.toMatch(/here/);
    } finally {
      await other.stop();
      await own.cleanup();
    }
  });
});

function literal(s: string): string {
  return s.replace(/[.*+?^${}()|[\]\\]/g, '\\$&');
}
