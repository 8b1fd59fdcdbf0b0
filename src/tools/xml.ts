// Tiny helpers for the libvirt XML this project writes and reads.
import { XMLParser } from 'fast-xml-parser';

export function esc(s: string | number): string {
  return String(s).replace(/&/g, '&amp;').replace(/</g, '&lt;').replace(/>/g, '&gt;').replace(/"/g, '&quot;').replace(/'/g, '&apos;');
}

const parser = new XMLParser({
  ignoreAttributes: false,
  attributeNamePrefix: '@',
  parseTagValue: false,
  parseAttributeValue: false,
  isArray: (name) => ['host', 'device', 'disk', 'volume'].includes(name),
});

// eslint-disable-next-line @typescript-eslint/no-explicit-any
export type XmlNode = any;

export function parseXml(text: string): XmlNode {
  return parser.parse(text);
}

/** Text content of an element that may also carry attributes. */
export function text(node: XmlNode): string | undefined {
  if (node === undefined || node === null) return undefined;
  if (typeof node === 'object') return node['#text'] !== undefined ? String(node['#text']) : undefined;
  return String(node);
}

/** A libvirt <capacity unit='...'>N</capacity>-style element, in bytes. */
export function bytes(node: XmlNode): number | undefined {
  const t = text(node);
  if (t === undefined) return undefined;
  const unit = (typeof node === 'object' && node['@unit']) || 'bytes';
  const mult: Record<string, number> = { bytes: 1, B: 1, b: 1, KiB: 1024, K: 1024, k: 1024, MiB: 1024 ** 2, M: 1024 ** 2, GiB: 1024 ** 3, G: 1024 ** 3, TiB: 1024 ** 4, T: 1024 ** 4 };
  return Number(t) * (mult[unit] ?? 1);
}
