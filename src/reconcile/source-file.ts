// A parsed YAML file that can answer "where is this field?" for error messages.
import { isMap, isSeq, isScalar, type LineCounter, type Document, type Node, type Pair, type YAMLMap } from 'yaml';

export type FieldPath = (string | number)[];

export interface SourceFile {
  path: string;
  doc: Document.Parsed;
  lines: LineCounter;
}

export interface Position {
  line: number;
  col: number;
}

/** Dotted field name as users write it: images.fedora.qcow2.clusterSize, vms.web.disks[0].cache */
export function fieldName(path: FieldPath): string {
  let out = '';
  for (const seg of path) {
    if (typeof seg === 'number') out += `[${seg}]`;
    else out += out ? `.${seg}` : seg;
  }
  return out;
}

/**
 * Position of the node at `path`; with `key: true`, of the map key naming the last segment.
 * Falls back to the deepest node that exists, so a missing field points at its parent.
 */
// A map's pairs by key, built once per map: finding a field in a map of 100,000 images must
// not scan the map each time (validation would be quadratic).
const indexes = new WeakMap<object, Map<string, Pair>>();
function indexOf(map: YAMLMap): Map<string, Pair> {
  let idx = indexes.get(map);
  if (!idx) {
    idx = new Map();
    for (const p of map.items as Pair[]) if (isScalar(p.key) && !idx.has(String(p.key.value))) idx.set(String(p.key.value), p);
    indexes.set(map, idx);
  }
  return idx;
}

export function locate(file: SourceFile, path: FieldPath, opts: { key?: boolean } = {}): Position {
  let node: unknown = file.doc.contents;
  let best: Node | undefined = node as Node | undefined;
  for (let i = 0; i < path.length; i++) {
    const seg = path[i]!;
    const last = i === path.length - 1;
    if (isMap(node)) {
      const pair = indexOf(node).get(String(seg));
      if (!pair) break;
      if (last && opts.key && pair.key) {
        best = pair.key as Node;
        break;
      }
      node = pair.value;
      if (node) best = node as Node;
      else {
        best = pair.key as Node;
        break;
      }
    } else if (isSeq(node) && typeof seg === 'number') {
      const item = node.items[seg];
      if (!item) break;
      node = item;
      best = item as Node;
    } else break;
  }
  const offset = best?.range?.[0] ?? 0;
  const p = file.lines.linePos(offset);
  return { line: p.line, col: p.col };
}
