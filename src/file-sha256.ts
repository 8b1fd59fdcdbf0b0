// The SHA-256 of a file, streamed (any size), with how far it has read for progress: one
// function for downloads checked against their digest, published images, backup copies sent
// off the host, and the large files of a directory source.
import { createHash } from 'node:crypto';
import { createReadStream } from 'node:fs';

export async function sha256File(file: string, onBytes?: (done: number) => void): Promise<string> {
  const h = createHash('sha256');
  let done = 0;
  for await (const chunk of createReadStream(file)) {
    h.update(chunk as Buffer);
    done += (chunk as Buffer).length;
    onBytes?.(done);
  }
  return h.digest('hex');
}
