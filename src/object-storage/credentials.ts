// Credentials files named in the YAML (never their content).
import { readFile } from 'node:fs/promises';

/** A credentials file named in the YAML, read with an error that says which one. */
export async function readCredentials(file: string): Promise<string> {
  return readFile(file, 'utf8').catch((e: NodeJS.ErrnoException) => Promise.reject(new Error(`credentialsFile ${file}: cannot read it (${e.code ?? e.message})`)));
}
