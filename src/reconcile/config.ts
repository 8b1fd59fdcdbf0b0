// load → schema → semantics: the one entry point from -f paths to a DesiredState.
import { ConfigErrors, type ConfigError } from './errors.js';
import { expandPaths, parseFile } from './load.js';
import type { DesiredState } from './model.js';
import { resolveExisting } from './paths.js';
import { checkSchema } from './schema.js';
import { buildDesiredState, type ParsedFile } from './validate.js';

/** Loads and checks every file; throws ConfigErrors listing all problems at once. */
export async function loadDesiredState(inputs: string[]): Promise<DesiredState> {
  const { files, errors } = await expandPaths(inputs);
  const parsed: ParsedFile[] = [];
  const results = await Promise.all(files.map(parseFile));
  for (const r of results) {
    errors.push(...r.errors);
    if (!r.source || r.errors.length) continue;
    const data: unknown = r.source.doc.toJS({ maxAliasCount: 100 });
    const schemaErrors = checkSchema(r.source, data);
    errors.push(...schemaErrors);
    if (!schemaErrors.length) parsed.push({ source: r.source, data });
  }
  // Semantic checks need schema-valid data; they run only when every file passed, so
  // references are never reported as missing merely because their file was malformed.
  if (errors.length) throw new ConfigErrors(sortErrors(errors));
  const built = buildDesiredState(parsed, resolveExisting);
  if (built.errors.length || !built.state) throw new ConfigErrors(sortErrors(built.errors));
  return built.state;
}

function sortErrors(errors: ConfigError[]): ConfigError[] {
  return [...errors].sort((a, b) => a.file.localeCompare(b.file) || a.line - b.line || a.col - b.col);
}
