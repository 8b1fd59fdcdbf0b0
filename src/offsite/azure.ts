// Backups copied to Azure Blob Storage (or Azurite): block blobs uploaded from the file in
// parallel blocks, downloaded to a temporary file. The connection string comes from
// credentialsFile or AZURE_STORAGE_CONNECTION_STRING, never from the YAML itself.
import { rename, rm } from 'node:fs/promises';
import { azureContainer } from '../object-storage/azure-client.js';
import type { OffsiteTarget } from '../reconcile/model.js';
import { keyOf, type OffsiteStore } from './store.js';

export async function azureStore(t: Extract<OffsiteTarget, { kind: 'azure' }>): Promise<OffsiteStore> {
  const container = await azureContainer(t, { tryTimeoutMs: 60_000 });
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
