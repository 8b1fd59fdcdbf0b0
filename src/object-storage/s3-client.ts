// Clients of the object stores, made one way for off-site backups and published images: the
// official SDKs, credentials from a file named in the YAML or the platforms' own chains, and
// bounded retries and timeouts (a place that is down fails in seconds to minutes, not never).
import { readCredentials } from './credentials.js';
import { S3Client } from '@aws-sdk/client-s3';

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

export interface S3Place {
  region?: string;
  endpoint?: string;
  pathStyle: boolean;
  credentialsFile?: string;
}

/** gs: Cloud Storage's XML API, which rejects the CRC checksums this SDK adds by default. */
export async function s3Client(t: S3Place, o: { requestTimeoutMs: number; gs?: boolean }): Promise<S3Client> {
  // The SDK warns on every Node 20 process that its versions after January 2027 need Node 22;
  // this project pins its version, so the warning would only be noise in every log.
  process.env.AWS_SDK_JS_NODE_VERSION_SUPPORT_WARNING_DISABLED ??= 'true';
  // Without credentialsFile: the SDK's own chain (environment, ~/.aws, instance role).
  const credentials = t.credentialsFile ? parseCredentials(await readCredentials(t.credentialsFile), t.credentialsFile) : undefined;
  return new S3Client({
    region: t.region ?? process.env.AWS_REGION ?? 'us-east-1',
    endpoint: t.endpoint,
    forcePathStyle: t.pathStyle,
    credentials,
    maxAttempts: 3,
    // A place that takes the connection and never answers is given up: a socket idle this long
    // (a part being sent is never idle that long).
    requestHandler: { connectionTimeout: 15_000, requestTimeout: o.requestTimeoutMs },
    ...(o.gs ? { requestChecksumCalculation: 'WHEN_REQUIRED' as const, responseChecksumValidation: 'WHEN_REQUIRED' as const } : {}),
  });
}
