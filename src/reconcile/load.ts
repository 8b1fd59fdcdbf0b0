// Reads -f paths (files or directories) into parsed YAML documents, keeping positions.
import { realpathSync } from 'node:fs';
import { readFile, readdir, stat } from 'node:fs/promises';
import type { Stats } from 'node:fs';
import path from 'node:path';
import { isScalar, LineCounter, parseAllDocuments, visit } from 'yaml';
import type { ConfigError } from './errors.js';
import type { SourceFile } from './source-file.js';

const YAML_EXT = /\.ya?ml$/;

/** Expands directories recursively to their *.yaml / *.yml files, sorted by path. */
export async function expandPaths(inputs: string[]): Promise<{ files: string[]; errors: ConfigError[] }> {
  const files: string[] = [];
  const errors: ConfigError[] = [];
  for (const input of inputs) {
    let st: Stats;
    try {
      st = await stat(input);
    } catch {
      errors.push({ file: input, line: 1, col: 1, field: '', message: 'no such file or directory (name the YAML file or directory with -f)' });
      continue;
    }
    if (st.isDirectory()) {
      const found = (await readdir(input, { recursive: true, withFileTypes: true }))
        .filter((d) => d.isFile() && YAML_EXT.test(d.name))
        .map((d) => path.join(d.parentPath ?? (d as unknown as { path: string }).path, d.name))
        .sort();
      if (found.length === 0) {
        errors.push({ file: input, line: 1, col: 1, field: '', message: 'directory holds no *.yaml or *.yml file' });
      }
      files.push(...found);
    } else files.push(input);
  }
  // One file named twice (-f x.yaml -f ./x.yaml, or a file also inside a named directory) is read once.
  const seen = new Set<string>();
  const unique = files.filter((f) => {
    const id = realpathOrSelf(f);
    if (seen.has(id)) return false;
    seen.add(id);
    return true;
  });
  return { files: unique, errors };
}

function realpathOrSelf(p: string): string {
  try {
    return realpathSync(p);
  } catch {
    return path.resolve(p);
  }
}

/** Where the first byte that is not UTF-8 is, or undefined for valid UTF-8. */
export function firstInvalidUtf8(buf: Buffer): number | undefined {
  for (let i = 0; i < buf.length; ) {
    const b = buf[i]!;
    const n = b < 0x80 ? 1 : b >= 0xc2 && b <= 0xdf ? 2 : b >= 0xe0 && b <= 0xef ? 3 : b >= 0xf0 && b <= 0xf4 ? 4 : 0;
    if (!n || i + n > buf.length) return i;
    for (let k = 1; k < n; k++) if ((buf[i + k]! & 0xc0) !== 0x80) return i;
    // Overlong 3- and 4-byte forms, surrogates and code points past U+10FFFF.
    if ((b === 0xe0 && buf[i + 1]! < 0xa0) || (b === 0xed && buf[i + 1]! > 0x9f) || (b === 0xf0 && buf[i + 1]! < 0x90) || (b === 0xf4 && buf[i + 1]! > 0x8f)) return i;
    i += n;
  }
  return undefined;
}

/** The input as text, or a positioned error: binary data and non-UTF-8 bytes are never parsed (nor echoed). */
export function decodeText(file: string, buf: Buffer): { text?: string; error?: ConfigError } {
  const nul = buf.indexOf(0);
  if (nul >= 0) return { error: { file, line: 1, col: 1, field: '', message: 'is binary data, not a YAML text file' } };
  const bad = firstInvalidUtf8(buf);
  if (bad !== undefined) {
    const before = buf.subarray(0, bad);
    const line = before.filter((c) => c === 10).length + 1;
    const lineStart = before.lastIndexOf(10) + 1;
    const col = Buffer.from(before.subarray(lineStart)).toString('utf8').length + 1;
    return { error: { file, line, col, field: '', message: `is not valid UTF-8 (byte 0x${buf[bad]!.toString(16).padStart(2, '0')}); save the file as UTF-8` } };
  }
  return { text: buf.toString('utf8') };
}

/** Reads a file's bytes; an unreadable file is a positioned error. */
export async function readInput(file: string): Promise<{ text?: string; error?: ConfigError }> {
  let buf: Buffer;
  try {
    buf = await readFile(file);
  } catch (e) {
    return { error: { file, line: 1, col: 1, field: '', message: `cannot read: ${(e as Error).message}` } };
  }
  return decodeText(file, buf);
}

export function parseFile(file: string, text: string): { source?: SourceFile; errors: ConfigError[] } {
  const lines = new LineCounter();
  // Duplicate keys are found below with a set per map: the parser's own check compares each
  // key with every earlier one, which is quadratic in a map of many images.
  const docs = parseAllDocuments(text, { lineCounter: lines, prettyErrors: false, uniqueKeys: false });
  const list = Array.isArray(docs) ? docs : [];
  const errors: ConfigError[] = [];
  if (list.length === 0) {
    return { errors: [{ file, line: 1, col: 1, field: '', message: 'file is empty: expected a YAML map with `version: 1`' }] };
  }
  if (list.length > 1) {
    const pos = lines.linePos(list[1]!.range[0]);
    errors.push({ file, line: pos.line, col: pos.col, field: '', message: 'a file holds exactly one YAML document; split documents into separate files' });
  }
  const doc = list[0]!;
  visit(doc, {
    Map: (_k, map) => {
      const seen = new Set<string>();
      for (const pair of map.items) {
        if (!isScalar(pair.key)) continue;
        const key = String(pair.key.value);
        if (seen.has(key)) {
          const pos = lines.linePos(pair.key.range?.[0] ?? 0);
          errors.push({ file, line: pos.line, col: pos.col, field: '', message: 'invalid YAML: duplicate key: a name may be declared only once in a map' });
        }
        seen.add(key);
      }
    },
  });
  for (const err of doc.errors) {
    const pos = err.linePos?.[0] ?? lines.linePos(err.pos[0]);
    const msg = err.code === 'DUPLICATE_KEY' ? 'duplicate key: a name may be declared only once in a map' : err.message.split('\n')[0]!;
    errors.push({ file, line: pos.line, col: pos.col, field: '', message: `invalid YAML: ${msg}` });
  }
  return { source: { path: file, doc, lines }, errors };
}
