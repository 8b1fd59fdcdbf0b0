// The desired state from a git repository: cloned once into the state directory, fetched on
// every interval (and on webhook), checked out at a branch, tag or commit.
import { mkdir, stat } from 'node:fs/promises';
import path from 'node:path';
import { simpleGit } from 'simple-git';

export interface GitSource {
  url: string;
  ref: string;
  /** subdirectory holding the YAML */
  subdir: string;
  /** where the clone lives */
  dir: string;
}

export interface Revision {
  /** e.g. main@sha1:0123abcd… */
  revision: string;
  sha: string;
  /** the directory to read YAML from */
  path: string;
}

/** Fetches and checks out `ref`; returns the revision now on disk. */
export async function syncGit(src: GitSource): Promise<Revision> {
  await mkdir(path.dirname(src.dir), { recursive: true });
  const exists = await stat(path.join(src.dir, '.git')).then(
    () => true,
    () => false,
  );
  if (!exists) await simpleGit().clone(src.url, src.dir, ['--no-checkout']);
  const git = simpleGit(src.dir);
  await git.fetch(['--prune', '--tags', '--force', 'origin']);
  // A branch follows origin; a tag or commit is taken as it is.
  const remoteBranch = (await git.branch(['-r'])).all.includes(`origin/${src.ref}`);
  const target = remoteBranch ? `origin/${src.ref}` : src.ref;
  const sha = (await git.revparse([`${target}^{commit}`])).trim();
  await git.checkout(['--force', '--detach', sha]);
  await git.clean('f', ['-d', '-x']);
  return { revision: `${src.ref}@sha1:${sha}`, sha, path: path.join(src.dir, src.subdir) };
}
