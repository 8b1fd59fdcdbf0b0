// Reads -f paths (files or directories) into parsed YAML documents, keeping positions.
import { readFile, readdir, stat } from 'node:fs/promises';
import path from 'node:path';
import { LineCounter, parseAllDocuments } from 'yaml';
import type { ConfigError } from './errors.js';
import type { SourceFile } from './source-file.js';

const YAML_EXT = /\.ya?ml$/;

/** Expands directories recursively to their *.yaml / *.yml files, sorted by path. */
export async function expandPaths(inputs: string[]): Promise<{ files: string[]; errors: ConfigError[] }> {
  const files: string[] = [];
  const errors: ConfigError[] = [];
  for (const input of inputs) {
    let st;
    try {
      st = await stat(input);
    } catch {
      errors.push({ file: input, line: 1, col: 1, field: '', message: 'no such file or directory' });
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
  return { files: [...new Set(files)], errors };
}

export async function parseFile(file: string): Promise<{ source?: SourceFile; errors: ConfigError[] }> {
  let text: string;
  try {
    text = await readFile(file, 'utf8');
  } catch (e) {
    return { errors: [{ file, line: 1, col: 1, field: '', message: `cannot read: ${(e as Error).message}` }] };
  }
  const lines = new LineCounter();
  const docs = parseAllDocuments(text, { lineCounter: lines, prettyErrors: false, uniqueKeys: true });
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
  for (const err of doc.errors) {
    const pos = err.linePos?.[0] ?? lines.linePos(err.pos[0]);
    const msg = err.code === 'DUPLICATE_KEY' ? 'duplicate key: a name may be declared only once in a map' : err.message.split('\n')[0]!;
    errors.push({ file, line: pos.line, col: pos.col, field: '', message: `invalid YAML: ${msg}` });
  }
  return { source: { path: file, doc, lines }, errors };
}
