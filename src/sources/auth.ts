// Credentials for downloads, from files only (never the YAML, never argv): a bearer token,
// or "user:password" for basic auth. Each value read is remembered for redaction.
import { readFile } from 'node:fs/promises';
import { rememberSecret } from '../tools/redact.js';
import type { DownloadAuth } from '../reconcile/model.js';
import type { HttpAuth } from './http.js';

export async function readAuth(auth: DownloadAuth | undefined): Promise<HttpAuth | undefined> {
  if (!auth) return undefined;
  const file = auth.bearerTokenFile ?? auth.basicAuthFile!;
  const text = (await readFile(file, 'utf8').catch((e: NodeJS.ErrnoException) => Promise.reject(new Error(`cannot read ${file}: ${e.code ?? e.message}`)))).trim();
  if (!text) throw new Error(`${file} is empty`);
  rememberSecret(Buffer.from(text));
  if (auth.bearerTokenFile) return { authorization: `Bearer ${text}` };
  if (!text.includes(':')) throw new Error(`${file} must hold user:password (basic auth)`);
  const header = `Basic ${Buffer.from(text).toString('base64')}`;
  rememberSecret(Buffer.from(header));
  return { authorization: header };
}
