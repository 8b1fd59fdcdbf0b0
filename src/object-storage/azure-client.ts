// Azure Blob Storage containers, made one way for off-site backups and published images: the
// connection string from a file named in the YAML or AZURE_STORAGE_CONNECTION_STRING (never
// the YAML itself), checked to be for the account the URL names; a few quick tries.
import { readCredentials } from './credentials.js';
import { BlobServiceClient, type ContainerClient } from '@azure/storage-blob';

export async function azureContainer(t: { url: string; account: string; container: string; credentialsFile?: string }, o: { tryTimeoutMs: number }): Promise<ContainerClient> {
  const cs = t.credentialsFile ? (await readCredentials(t.credentialsFile)).trim() : process.env.AZURE_STORAGE_CONNECTION_STRING;
  if (!cs) throw new Error(`${t.url}: no connection string: give credentialsFile (a file holding it) or set AZURE_STORAGE_CONNECTION_STRING`);
  const account = /(?:^|;)AccountName=([^;]+)/i.exec(cs)?.[1];
  if (account && account !== t.account) throw new Error(`${t.url}: the connection string is for account ${account}, not ${t.account}`);
  // A place that is down must fail in seconds, not minutes (the next run tries again); a single
  // try may still take long, as large blocks do.
  return BlobServiceClient.fromConnectionString(cs, {
    retryOptions: { maxTries: 3, retryDelayInMs: 500, maxRetryDelayInMs: 4000, tryTimeoutInMs: o.tryTimeoutMs },
  }).getContainerClient(t.container);
}
