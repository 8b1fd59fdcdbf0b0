// libvirt secrets: the XML reconcile defines (private, persistent), what secret-list and
// secret-dumpxml report, and setting a value from a file (never through argv). A private
// secret's value cannot be read back, so it is never compared: the caller records a salted
// digest of what it set.
import { constants } from 'node:fs';
import { open } from 'node:fs/promises';
import path from 'node:path';
import { run } from './exec.js';
import { withTempDir, withTempFile } from './scratch.js';
import { attr, buildXml, list, parseXml, text } from './xml.js';
import type { Virsh } from './virsh.js';

export type SecretUsage = 'volume' | 'ceph' | 'iscsi' | 'tls' | 'vtpm';

/** The element of <usage> that holds a usage type's id (libvirt's secret XML). */
const USAGE_ELEMENT: Record<SecretUsage, string> = { volume: 'volume', ceph: 'name', iscsi: 'target', tls: 'name', vtpm: 'name' };

export interface SecretDefinition {
  uuid: string;
  usage: SecretUsage;
  /** a volume's path, an iSCSI target, or a name (ceph, tls, vtpm) */
  usageId: string;
  description?: string;
}

export interface ObservedSecret extends SecretDefinition {
  private: boolean;
  ephemeral: boolean;
}

export function secretXml(d: SecretDefinition): string {
  return buildXml({
    secret: {
      '@ephemeral': 'no',
      '@private': 'yes',
      uuid: d.uuid,
      description: d.description,
      usage: { '@type': d.usage, [USAGE_ELEMENT[d.usage]]: d.usageId },
    },
  });
}

export function parseSecretXml(xml: string): ObservedSecret {
  const s = parseXml(xml).secret;
  const usage = (attr(s?.usage, 'type') ?? 'volume') as SecretUsage;
  return {
    uuid: text(s?.uuid) ?? '',
    usage,
    // (The parser reads <volume> as a list, as it is in pool XML.)
    usageId: text(list(s?.usage?.[USAGE_ELEMENT[usage] ?? 'name'])[0]) ?? '',
    description: text(s?.description),
    private: attr(s, 'private') === 'yes',
    ephemeral: attr(s, 'ephemeral') === 'yes',
  };
}

/** The uuids `virsh secret-list` prints (its first column). */
export function parseSecretList(out: string): string[] {
  return out
    .split('\n')
    .map((l) => /^\s*([0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12})\s/.exec(l)?.[1])
    .filter((u): u is string => !!u);
}

/** Every secret of the connection, read in two virsh processes (the list, then all their XML). */
export async function readSecrets(v: Virsh): Promise<ObservedSecret[]> {
  const [listed] = await v.batch([['secret-list']]);
  const uuids = parseSecretList(listed ?? '');
  if (!uuids.length) return [];
  const xmls = await v.batch(uuids.map((u) => ['secret-dumpxml', u]));
  return xmls.flatMap((x) => (x ? [parseSecretXml(x)] : []));
}

export async function defineSecret(v: Virsh, d: SecretDefinition): Promise<void> {
  await withTempFile(secretXml(d), (f) => v.exec(['secret-define', f]));
}

/**
 * Sets the value (`base64`: the bytes are the value base64-encoded, as Ceph keys are written),
 * handed to virsh through a FIFO in private scratch: never an argument, and never on disk — a
 * FIFO holds nothing, so not even a kill -9 leaves a copy behind. (Its standard input would
 * not do: Node gives children a socket there, which virsh cannot open by path.)
 */
export async function setSecretValue(v: Virsh, uuid: string, value: Uint8Array, encoding: 'raw' | 'base64'): Promise<void> {
  await withTempDir(async (dir) => {
    const fifo = path.join(dir, 'value');
    await run('mkfifo', ['-m', '0600', fifo], { retries: 0 });
    let ended = false;
    const setting = v.exec(['secret-set-value', uuid, '--file', fifo, ...(encoding === 'raw' ? ['--plain'] : [])]).finally(() => {
      ended = true;
    });
    // Its failure is awaited below; until then it must not count as unhandled (that ends the process).
    setting.catch(() => undefined);
    // Written once virsh has opened it for reading (a non-blocking open fails until then).
    for (;;) {
      if (ended) break;
      const fh = await open(fifo, constants.O_WRONLY | constants.O_NONBLOCK).catch((e: NodeJS.ErrnoException) => {
        if (e.code === 'ENXIO') return undefined;
        throw e;
      });
      if (fh) {
        try {
          await fh.write(value);
        } finally {
          await fh.close();
        }
        break;
      }
      await new Promise((r) => setTimeout(r, 5));
    }
    await setting;
  });
}

export async function undefineSecret(v: Virsh, uuid: string): Promise<void> {
  await v.exec(['secret-undefine', uuid]);
}
