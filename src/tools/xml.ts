// The libvirt XML this project writes and reads, through fast-xml-parser: documents are
// built as objects ('@name' for attributes, '' for an empty element, undefined left out)
// and never by string concatenation, so every value is escaped.
import { XMLBuilder, XMLParser } from 'fast-xml-parser';

const builder = new XMLBuilder({ ignoreAttributes: false, attributeNamePrefix: '@', suppressEmptyNode: true });

/** An element: attributes as '@name', children by name (arrays repeat), '' for an empty element. */
export type XmlElement = { [key: string]: XmlValue };
export type XmlValue = string | number | boolean | undefined | XmlElement | XmlElement[];

export function buildXml(doc: XmlElement): string {
  return `${builder.build(doc)}\n`;
}

const parser = new XMLParser({
  ignoreAttributes: false,
  attributeNamePrefix: '@',
  parseTagValue: false,
  parseAttributeValue: false,
  isArray: (name) => ['host', 'device', 'disk', 'volume'].includes(name),
});

/**
 * A parsed element: what libvirt sends is only as typed as its schema, so readers look
 * fields up and check them (text(), bytes(), list()) rather than trust a declared shape.
 */
export interface XmlNode {
  [key: string]: XmlNode | undefined;
}

// For editing a document libvirt wrote: every attribute, text and element kept as it was.
const editParser = new XMLParser({ ignoreAttributes: false, attributeNamePrefix: '@', parseTagValue: false, parseAttributeValue: false, trimValues: true });

/** A document to change a few fields of and build again with buildXml. */
export function parseXmlForEdit(text: string): XmlElement {
  return editParser.parse(text) as XmlElement;
}

export function parseXml(text: string): XmlNode {
  return parser.parse(text) as XmlNode;
}

/** An element that may appear once or repeated, as a list. */
export function list(v: XmlNode | XmlNode[] | undefined): XmlNode[] {
  return v === undefined ? [] : Array.isArray(v) ? v : [v];
}

/** An attribute's value. */
export function attr(node: XmlNode | undefined, name: string): string | undefined {
  const v = node?.[`@${name}`] as unknown;
  return v === undefined ? undefined : String(v);
}

/** Text content of an element that may also carry attributes. */
export function text(node: XmlNode | string | number | undefined): string | undefined {
  if (node === undefined || node === null) return undefined;
  if (typeof node === 'object') return node['#text'] !== undefined ? String(node['#text'] as unknown) : undefined;
  return String(node);
}

/** A libvirt <capacity unit='...'>N</capacity>-style element, in bytes. */
export function bytes(node: XmlNode | undefined): number | undefined {
  const t = text(node);
  if (t === undefined) return undefined;
  const unit = attr(node, 'unit') ?? 'bytes';
  const mult: Record<string, number> = {
    bytes: 1,
    B: 1,
    b: 1,
    KiB: 1024,
    K: 1024,
    k: 1024,
    MiB: 1024 ** 2,
    M: 1024 ** 2,
    GiB: 1024 ** 3,
    G: 1024 ** 3,
    TiB: 1024 ** 4,
    T: 1024 ** 4,
  };
  return Number(t) * (mult[unit] ?? 1);
}
