// Backups copied to S3 or an S3-compatible server (MinIO, Ceph RGW, s3rver): multipart
// uploads streamed from the file (lib-storage), downloads streamed to a temporary file.
import { createReadStream, createWriteStream } from 'node:fs';
import { readFile, rename, rm } from 'node:fs/promises';
import type { Readable } from 'node:stream';
import { pipeline } from 'node:stream/promises';
import { DeleteObjectCommand, GetObjectCommand, S3Client } from '@aws-sdk/client-s3';
import { Upload } from '@aws-sdk/lib-storage';
import type { OffsiteTarget } from '../reconcile/model.js';
import { keyOf, type OffsiteStore } from './store.js';

/** The default profile of an AWS credentials file (INI: aws_access_key_id, aws_secret_access_key, aws_session_token). */
export function parseCredentials(text: string, file: string): { accessKeyId: string; secretAccessKey: string; sessionToken?: string } {
  let section = '';
  const v: Record<string, string> = {};
  for (const line of text.split(/\r?\n/)) {
    const l = line.trim();
    if (!l || l.startsWith('#') || l.startsWith(';')) continue;
    const s = /^\[(.+)\]$/.exec(l);
    if (s) section = s[1]!.trim();
    else if (section === 'default' || section === '') {
      const m = /^([A-Za-z_]+)\s*=\s*(.*)$/.exec(l);
      if (m) v[m[1]!.toLowerCase()] = m[2]!.trim();
    }
  }
  if (!v.aws_access_key_id || !v.aws_secret_access_key) throw new Error(`${file} has no aws_access_key_id and aws_secret_access_key in its [default] profile`);
  return { accessKeyId: v.aws_access_key_id, secretAccessKey: v.aws_secret_access_key, sessionToken: v.aws_session_token };
}

export async function s3Store(t: Extract<OffsiteTarget, { kind: 's3' }>): Promise<OffsiteStore> {
  // The SDK warns on every Node 20 process that its versions after January 2027 need Node 22;
  // this project pins its version, so the warning would only be noise in every backup log.
  process.env.AWS_SDK_JS_NODE_VERSION_SUPPORT_WARNING_DISABLED ??= 'true';
  // Without credentialsFile: the SDK's own chain (environment, ~/.aws, instance role).
  const credentials = t.credentialsFile ? parseCredentials(await readFile(t.credentialsFile, 'utf8'), t.credentialsFile) : undefined;
  const client = new S3Client({
    region: t.region ?? process.env.AWS_REGION ?? 'us-east-1',
    endpoint: t.endpoint,
    forcePathStyle: t.pathStyle,
    credentials,
    maxAttempts: 3,
    // A place that takes the connection and never answers fails the run in minutes, not never:
    // a socket idle this long is given up (a part being sent is never idle that long).
    requestHandler: { connectionTimeout: 15_000, requestTimeout: 60_000 },
  });
  const key = (name: string) => keyOf(t.prefix, name);
  return {
    url: t.url,
    async put(local, name) {
      await new Upload({ client, params: { Bucket: t.bucket, Key: key(name), Body: createReadStream(local) }, partSize: 16 * 1024 * 1024, queueSize: 4 }).done();
    },
    async get(name, local) {
      const r = await client.send(new GetObjectCommand({ Bucket: t.bucket, Key: key(name) }));
      const partial = `${local}.partial`;
      try {
        await pipeline(r.Body as Readable, createWriteStream(partial, { mode: 0o600 }));
        await rename(partial, local);
      } catch (e) {
        await rm(partial, { force: true });
        throw e;
      }
    },
    async remove(name) {
      await client.send(new DeleteObjectCommand({ Bucket: t.bucket, Key: key(name) }));
    },
  };
}
