// Checks one parsed file against schemas/storage.schema.json and turns ajv's errors
// into FILE:LINE:COL: field: message lines a person can act on.
import { createHash } from 'node:crypto';
import { readFileSync } from 'node:fs';
import { createRequire } from 'node:module';
import { fileURLToPath } from 'node:url';
import type { ErrorObject } from 'ajv/dist/2020.js';
import type { ConfigError } from './errors.js';
import { DURATION_HELP, DURATION_PATTERN } from './durations.js';
import { SIZE_HELP, SIZE_PATTERN } from './sizes.js';
import { fieldName, locate, type FieldPath, type SourceFile } from './source-file.js';

export const SCHEMA_PATH = fileURLToPath(new URL('../../schemas/storage.schema.json', import.meta.url));

type Validate = ((data: unknown) => boolean) & { errors?: ErrorObject[] | null };

/**
 * The validator the build compiled (scripts/build-validator.mjs) if it was made from this very
 * schema; otherwise (running from source) the schema compiled now, with the same options.
 */
function loadValidator(): Validate {
  const text = readFileSync(SCHEMA_PATH, 'utf8');
  const require = createRequire(import.meta.url);
  try {
    // Found from the package root: this module runs from src/, dist/reconcile/ or a bundle chunk.
    const built = require(fileURLToPath(new URL('../../dist/reconcile/storage-validator.cjs', import.meta.url))) as Validate & { default?: Validate; schemaDigest?: string };
    if (built.schemaDigest === createHash('sha256').update(text).digest('hex')) return built.default ?? built;
  } catch {
    // not built (tests running the TypeScript sources): compile below
  }
  // ajv's compiler is loaded only here: a built CLI never pays for it at start-up.
  const Ajv2020 = (require('ajv/dist/2020.js') as typeof import('ajv/dist/2020.js')).default;
  // verbose: errors carry their parentSchema, so unknown-field errors can list what is allowed.
  const ajv = new Ajv2020({ allErrors: true, allowUnionTypes: true, strict: true, verbose: true });
  return ajv.compile(JSON.parse(text) as Record<string, unknown>);
}

const validateFn = loadValidator();

function pointerToPath(pointer: string): FieldPath {
  if (!pointer) return [];
  return pointer
    .slice(1)
    .split('/')
    .map((s) => s.replace(/~1/g, '/').replace(/~0/g, '~'))
    .map((s) => (/^\d+$/.test(s) ? Number(s) : s));
}

const TYPE_WORD: Record<string, string> = {
  array: 'a list',
  object: 'a map',
  string: 'a string',
  integer: 'a whole number',
  number: 'a number',
  boolean: 'true or false',
};

function typeWord(v: unknown): string {
  if (v === null) return 'nothing (null)';
  if (Array.isArray(v)) return 'a list';
  if (typeof v === 'object') return 'a map';
  return `${typeof v} ${JSON.stringify(v)}`;
}

function describe(e: ErrorObject, value: unknown): { message: string; key: boolean; extra?: string } {
  const p = e.params as Record<string, unknown>;
  switch (e.keyword) {
    case 'additionalProperties': {
      const allowed = Object.keys((e.parentSchema?.properties as object) ?? {});
      return {
        message: `unknown field ${JSON.stringify(p.additionalProperty)}${allowed.length ? ` (allowed: ${allowed.join(', ')})` : ''}`,
        key: true,
        extra: String(p.additionalProperty),
      };
    }
    case 'required':
      return { message: `missing required field ${JSON.stringify(p.missingProperty)}`, key: false };
    case 'enum':
      return { message: `must be one of: ${(p.allowedValues as unknown[]).map((v) => JSON.stringify(v)).join(', ')} (got ${JSON.stringify(value)})`, key: false };
    case 'const':
      return { message: `must be ${JSON.stringify(p.allowedValue)} (got ${JSON.stringify(value)})`, key: false };
    case 'type':
      return {
        message: `must be ${String(p.type)
          .split(',')
          .map((t) => TYPE_WORD[t] ?? t)
          .join(
            ' or ',
          )} (got ${typeWord(value)})${String(p.type) === 'string' && (typeof value === 'number' || typeof value === 'boolean') ? '; YAML read it as a number or boolean: write it in quotes' : ''}`,
        key: false,
      };
    case 'pattern': {
      const pat = String(p.pattern);
      if (pat === SIZE_PATTERN) return { message: `must be ${SIZE_HELP} (got ${JSON.stringify(value)})`, key: false };
      if (pat === '^/') return { message: `must be an absolute path (got ${JSON.stringify(value)})`, key: false };
      if (pat.startsWith('^[a-z0-9]([a-z0-9._-]'))
        return {
          message: `must be a name: lower-case letters, digits, '.', '_' or '-', starting with a letter or digit, at most 63 characters (got ${JSON.stringify(value)})`,
          key: false,
        };
      if (pat.startsWith('^0?[0-7]')) return { message: `must be an octal mode such as "0600" (got ${JSON.stringify(value)})`, key: false };
      if (pat.startsWith('^(s3|azure|gs)'))
        return { message: `must be an s3://BUCKET/KEY, azure://ACCOUNT/CONTAINER/BLOB or gs://BUCKET/OBJECT URL (got ${JSON.stringify(value)})`, key: false };
      if (pat.startsWith('^(vd')) return { message: `must be a disk target such as vda, sdb, hdc or nvme0n1 (got ${JSON.stringify(value)})`, key: false };
      if (pat.endsWith('%$')) return { message: `must be a percentage from 0% to 100% (got ${JSON.stringify(value)})`, key: false };
      if (pat === '^[A-Za-z0-9_.+-]([A-Za-z0-9 _.+-]{0,62}[A-Za-z0-9_.+-])?$')
        return {
          message: `must be 1 to 64 letters, digits or _ . + -, with spaces only inside (QEMU refuses other characters in a serial; got ${JSON.stringify(value)})`,
          key: false,
        };
      if (pat === '^(0x)?[0-9a-fA-F]{16}$') return { message: `must be 16 hex digits, e.g. 5000c50015ea71ad or 0x5000c50015ea71ad (got ${JSON.stringify(value)})`, key: false };
      if (pat.startsWith('^[!-~]([ -~]{0,'))
        return {
          message: `must be 1 to ${Number(/\{0,(\d+)\}/.exec(pat)?.[1]) + 2} printable ASCII characters, with spaces only inside (got ${JSON.stringify(value)})`,
          key: false,
        };
      if (pat.startsWith('^[^\\u0000-\\u001f')) return { message: `must not hold control characters such as a newline or escape (got ${JSON.stringify(value)})`, key: false };
      if (pat === '^[A-Za-z0-9._:-]+$') return { message: `must be a host name or an IP address (got ${JSON.stringify(value)})`, key: false };
      if (pat === DURATION_PATTERN) return { message: `must be ${DURATION_HELP} (got ${JSON.stringify(value)})`, key: false };
      if (pat.startsWith('^[A-Za-z0-9._/-]+='))
        return {
          message: `must be KEY=VALUE, as --label takes it (letters, digits, . _ / - in the key; no white space or = in the value; got ${JSON.stringify(value)})`,
          key: false,
        };
      if (pat.startsWith('^[A-Za-z0-9._*?'))
        return { message: `must be a host name or a glob of names (letters, digits, . _ - and * ? [ ] ! { } , ; got ${JSON.stringify(value)})`, key: false };
      return { message: `must match ${pat} (got ${JSON.stringify(value)})`, key: false };
    }
    case 'minimum':
    case 'maximum':
      return { message: `must be ${e.keyword === 'minimum' ? '>=' : '<='} ${String(p.limit)} (got ${JSON.stringify(value)})`, key: false };
    case 'minLength':
      return { message: 'must not be empty', key: false };
    case 'minItems':
      return { message: `must have at least ${String(p.limit)} item(s)`, key: false };
    case 'minProperties': {
      // An empty map where fields are expected: name the ones it may hold.
      const props = Object.keys((e.parentSchema as { properties?: object } | undefined)?.properties ?? {});
      return { message: `must name at least one of ${props.join(', ')}`, key: false };
    }
    case 'uniqueItems':
      return { message: `must not repeat items (items ${String(p.j)} and ${String(p.i)} are equal)`, key: false };
    default:
      return { message: e.message ?? e.keyword, key: false };
  }
}

function valueAt(data: unknown, path: FieldPath): unknown {
  let v = data;
  for (const seg of path) v = v && typeof v === 'object' ? (v as Record<string | number, unknown>)[seg] : undefined;
  return v;
}

export function checkSchema(file: SourceFile, data: unknown): ConfigError[] {
  if (validateFn(data)) return [];
  const out: ConfigError[] = [];
  const seen = new Set<string>();
  for (const e of validateFn.errors ?? []) {
    let path = pointerToPath(e.instancePath);
    // propertyNames errors come twice: once on the key (with propertyName), once as the parent; keep the key one.
    if (e.keyword === 'propertyNames') continue;
    let key = false;
    if (typeof e.propertyName === 'string') {
      path = [...path, e.propertyName];
      key = true;
    }
    const value = key ? path[path.length - 1] : valueAt(data, path);
    const d = describe(e, value);
    if (d.extra !== undefined) path = [...path, d.extra];
    key ||= d.key;
    // A union type (integer|string) reports both "type" and "pattern" for one bad value; say it once.
    const dedupe = `${fieldName(path)}`;
    if (e.keyword !== 'additionalProperties' && e.keyword !== 'required' && seen.has(dedupe)) continue;
    seen.add(dedupe);
    const pos = locate(file, path, { key });
    const field = fieldName(path) || '(top level)';
    out.push({ file: file.path, line: pos.line, col: pos.col, field, message: d.message });
  }
  return out;
}
