// The inventory journal: changes appended during an apply, applied on top of inventory.json by
// every reader (also after a kill), folded into inventory.json at the apply's end.
import { mkdtemp, readFile, rm, writeFile } from 'node:fs/promises';
import { existsSync } from 'node:fs';
import { tmpdir } from 'node:os';
import path from 'node:path';
import { afterEach, describe, expect, it } from 'vitest';
import { InventoryJournal, readInventory, type InventoryRecord } from '../../src/reconcile/inventory.js';

let dir: string;
afterEach(async () => rm(dir, { recursive: true, force: true }));
const pool = (name: string, status: 'building' | 'ready' = 'ready') =>
  ({ type: 'pool', name, uuid: `u-${name}`, status, createdAt: 'now', uri: 'qemu:///system' }) as InventoryRecord;

describe('inventory journal', () => {
  it('a damaged line anywhere but at the end (garbage, null, a gap in the numbers) stops everything with the file and line named (adversarial pass)', async () => {
    dir = await mkdtemp(path.join(tmpdir(), 'vr-journal-'));
    const good = (seq: number, name: string) => JSON.stringify({ seq, key: `pool:${name}`, record: pool(name) });
    for (const bad of ['garbage', 'null', '42', '{}', JSON.stringify({ seq: 1000000000, key: 'pool:z', record: pool('z') })]) {
      await writeFile(path.join(dir, 'inventory.journal'), `${good(1, 'a')}\n${bad}\n${good(2, 'b')}\n`);
      await expect(readInventory(dir)).rejects.toThrow(/inventory\.journal: line 2 is damaged .* changes nothing/);
    }
  });

  it('each change is readable as soon as record() resolves; checkpoint folds them into inventory.json and removes the journal', async () => {
    dir = await mkdtemp(path.join(tmpdir(), 'vr-journal-'));
    const inv = await readInventory(dir);
    const j = new InventoryJournal(dir, inv);
    await Promise.all([j.record('pool:a', pool('a', 'building')), j.record('pool:b', pool('b'))]);
    await j.record('pool:a', pool('a'));
    await j.record('pool:b', null);
    expect((await readInventory(dir)).objects).toEqual({ 'pool:a': pool('a') });
    expect(existsSync(path.join(dir, 'inventory.journal'))).toBe(true);
    await j.checkpoint();
    expect(existsSync(path.join(dir, 'inventory.journal'))).toBe(false);
    const file = JSON.parse(await readFile(path.join(dir, 'inventory.json'), 'utf8'));
    expect(file).toMatchObject({ objects: { 'pool:a': pool('a') }, journalSeq: 4 });
    expect((await readInventory(dir)).objects).toEqual({ 'pool:a': pool('a') });
  });

  it('a line cut short by a crash ends the journal; lines already in inventory.json (seq at most journalSeq) are not applied again', async () => {
    dir = await mkdtemp(path.join(tmpdir(), 'vr-journal-'));
    await writeFile(path.join(dir, 'inventory.json'), JSON.stringify({ version: 1, objects: { 'pool:a': pool('a') }, journalSeq: 2 }));
    const lines = [
      { seq: 1, key: 'pool:a', record: pool('a', 'building') },
      { seq: 2, key: 'pool:a', record: pool('a') },
      { seq: 3, key: 'pool:c', record: pool('c', 'building') },
    ].map((l) => JSON.stringify(l));
    await writeFile(path.join(dir, 'inventory.journal'), `${lines.join('\n')}\n{"seq":4,"key":"pool:c","rec`);
    const inv = await readInventory(dir);
    expect(inv.objects).toEqual({ 'pool:a': pool('a'), 'pool:c': pool('c', 'building') });
    expect(inv.journalSeq).toBe(3);
    // The next apply folds it in before appending anything after the cut line.
    const j = new InventoryJournal(dir, inv);
    await j.begin();
    expect(existsSync(path.join(dir, 'inventory.journal'))).toBe(false);
    await j.record('pool:d', pool('d', 'building'));
    expect((await readInventory(dir)).objects).toEqual({ 'pool:a': pool('a'), 'pool:c': pool('c', 'building'), 'pool:d': pool('d', 'building') });
  });
});
