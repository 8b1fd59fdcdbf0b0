// Two spellings of one file must be one file: `/srv//x.img`, `/srv/./x.img`, `/srv/a/../x.img`
// and a path through a symlinked directory all name /srv/x.img. Paths are normalised
// lexically when the YAML is read, and compared by what they resolve to (the longest
// existing ancestor through realpath, plus the rest) before any two are called different.
import { realpathSync } from 'node:fs';
import path from 'node:path';

/** Lexical form: absolute, no `//`, `.` or `..`, no trailing slash. */
export function normalizePath(p: string): string {
  const n = path.posix.normalize(p);
  return n.length > 1 && n.endsWith('/') ? n.slice(0, -1) : n;
}

export type Resolver = (p: string) => string;

/**
 * Resolves symlinks in the part of the path that exists; the rest is kept as written.
 * Directories are resolved once per call of makeResolver (100,000 images share a few).
 */
export function makeResolver(): Resolver {
  const dirs = new Map<string, string>();
  const resolveDir = (d: string): string => {
    let r = dirs.get(d);
    if (r === undefined) {
      try {
        r = realpathSync(d);
      } catch {
        r = d === '/' ? '/' : path.posix.join(resolveDir(path.posix.dirname(d)), path.posix.basename(d));
      }
      dirs.set(d, r);
    }
    return r;
  };
  return (p) => {
    const n = normalizePath(p);
    try {
      return realpathSync(n);
    } catch {
      return n === '/' ? n : path.posix.join(resolveDir(path.posix.dirname(n)), path.posix.basename(n));
    }
  };
}

// System directories: an image written there (or a pool rooted there) damages the host.
// /dev is refused for images (a device is declared as a VM disk path, not built).
const SYSTEM_DIRS = ['/proc', '/sys', '/dev', '/boot', '/etc', '/usr', '/bin', '/sbin'];

const under = (p: string, dir: string) => p === dir || p.startsWith(`${dir}/`);

/** Why an image may not live at p (checked on both spellings), or undefined. */
export function systemPlace(p: string): string | undefined {
  const hit = SYSTEM_DIRS.find((d) => under(p, d)) ?? (/^\/lib[^/]*(\/|$)/.test(p) ? p.split('/').slice(0, 2).join('/') : undefined);
  return hit ? `${hit} is a system directory` : undefined;
}

/** Why a pool may not be rooted at p, or undefined: `/` itself, or a system directory. */
export function systemPoolPlace(p: string): string | undefined {
  if (p === '/') return '/ is the root of the host';
  return systemPlace(p);
}
