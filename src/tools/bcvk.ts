// bcvk (bootc virtualization kit): a bootc container image installed to a bootable disk
// image (`bcvk to-disk`, which runs `bootc install to-disk` in a throwaway VM). The disk it
// writes carries the installed image's digest in an extended attribute, read with getfattr.
import { CommandError, run, runLong } from './exec.js';

/** bcvk's version line, or undefined where it is not installed. */
export async function bcvkVersion(): Promise<string | undefined> {
  try {
    return (await run('bcvk', ['--version'], { retries: 0 })).stdout.trim();
  } catch (e) {
    if (e instanceof CommandError && e.exitCode === undefined && /ENOENT/.test(e.stderr)) return undefined;
    throw e;
  }
}

export interface ToDiskOptions {
  /** bytes of the disk made */
  size: number;
  filesystem?: string;
  /** bytes; passed in MiB (bootc takes sizes with a unit) */
  rootSize?: number;
  kargs: string[];
  signal?: AbortSignal;
}

/**
 * Installs `image` (a name in local container storage: the installed system follows that name
 * for its updates) to a new qcow2 disk at `target`.
 */
export async function toDisk(image: string, target: string, o: ToDiskOptions): Promise<void> {
  const args = ['to-disk', '--format=qcow2', `--disk-size=${o.size}`];
  if (o.filesystem) args.push(`--filesystem=${o.filesystem}`);
  if (o.rootSize !== undefined) args.push(`--root-size=${Math.floor(o.rootSize / 1048576)}M`);
  // --karg=VALUE: an argument starting with "-" stays the option's value.
  for (const k of o.kargs) args.push(`--karg=${k}`);
  await runLong('bcvk', [...args, '--', image, target], { signal: o.signal });
}

/** The image digest bcvk wrote on a disk it made (its user.bootc.image_digest attribute), if any. */
export async function installedImageDigest(file: string): Promise<string | undefined> {
  try {
    const { stdout } = await run('getfattr', ['--only-values', '--absolute-names', '-n', 'user.bootc.image_digest', '--', file], { retries: 0 });
    return stdout.trim() || undefined;
  } catch (e) {
    if (e instanceof CommandError && /No such attribute/i.test(e.message)) return undefined;
    throw e;
  }
}
