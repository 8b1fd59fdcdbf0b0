// Backups copied to Azure Blob Storage (or Azurite): block blobs uploaded from the file in
// parallel blocks, downloaded to a temporary file. The connection string comes from
// credentialsFile or AZURE_STORAGE_CONNECTION_STRING, never from the YAML itself.
import { readFile, rename, rm } from 'node:fs/promises';
import { BlobServiceClient } from '@azure/storage-blob';
import type { OffsiteTarget } from '../reconcile/model.js';
import { keyOf, type OffsiteStore } from './store.js';

export async function azureStore(t: Extract<OffsiteTarget, { kind: 'azure' }>): Promise<OffsiteStore> {
  const cs = t.credentialsFile ? (await readFile(t.credentialsFile, 'utf8')).trim() : process.env.AZURE_STORAGE_CONNECTION_STRING;
  if (!cs) throw new Error(`${t.url}: no connection string: give credentialsFile (a file holding it) or set AZURE_STORAGE_CONNECTION_STRING`);
  const account = /(?:^|;)AccountName=([^;]+)/i.exec(cs)?.[1];
  if (account && account !== t.account) throw new Error(`${t.url}: the connection string is for account ${account}, not ${t.account}`);
  // A few quick tries: a place that is down must fail the run in seconds, not minutes (the
  // next run tries again); a single try may still take long, as large blocks do.
  const container = BlobServiceClient.fromConnectionString(cs, {
    retryOptions: { maxTries: 3, retryDelayInMs: 500, maxRetryDelayInMs: 4000, tryTimeoutInMs: 60_000 },
  }).getContainerClient(t.container);
  await container.createIfNotExists();
  const blob = (name: string) => container.getBlockBlobClient(keyOf(t.prefix, name));
  return {
    url: t.url,
    async put(local, name) {
      await blob(name).uploadFile(local, { blockSize: 8 * 1024 * 1024, concurrency: 4 });
    },
    async get(name, local) {
      const partial = `${local}.partial`;
      try {
        await blob(name).downloadToFile(partial);
        await rename(partial, local);
      } catch (e) {
        await rm(partial, { force: true });
        throw e;
      }
    },
    async remove(name) {
      await blob(name).deleteIfExists();
    },
  };
}
