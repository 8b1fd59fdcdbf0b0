// Compiles schemas/storage.schema.json into a standalone validator at build time (ajv
// standalone code), so a command does not load and run ajv's compiler on every start.
// src/reconcile/schema.ts loads it when its schema digest matches, and compiles otherwise.
import { createHash } from 'node:crypto';
import { readFileSync, writeFileSync } from 'node:fs';
import Ajv2020 from 'ajv/dist/2020.js';
import standaloneCode from 'ajv/dist/standalone/index.js';

const text = readFileSync(new URL('../schemas/storage.schema.json', import.meta.url), 'utf8');
// The same options as schema.ts: a difference would validate differently.
const ajv = new Ajv2020({ allErrors: true, allowUnionTypes: true, strict: true, verbose: true, code: { source: true } });
const code = standaloneCode(ajv, ajv.compile(JSON.parse(text)));
const digest = createHash('sha256').update(text).digest('hex');
writeFileSync(new URL('../dist/reconcile/storage-validator.cjs', import.meta.url), `${code}\nmodule.exports.schemaDigest = ${JSON.stringify(digest)};\n`);
