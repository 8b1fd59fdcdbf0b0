// Integrity checks of image files with `qemu-img check`: leaks and corruptions, and their
// repair. Repair never uses force-share: qemu's own image locking then refuses an image
// that a running guest holds open, on top of the caller's check of running domains.
import { run, CommandError } from './exec.js';

export interface CheckResult {
  path: string;
  format?: string;
  /** false: the format has no consistency metadata to check (raw) */
  checkable: boolean;
  leaks: number;
  corruptions: number;
  leaksFixed: number;
  corruptionsFixed: number;
  checkErrors: number;
  error?: string;
}

export async function checkImage(p: string, opts: { repair?: 'leaks' | 'all'; inUse: boolean; driver?: string }): Promise<CheckResult> {
  const args = ['check', '--output=json', ...(opts.driver ? ['-f', opts.driver] : [])];
  if (opts.repair) args.push('-r', opts.repair);
  else if (opts.inUse) args.push('--force-share');
  const base: CheckResult = { path: p, checkable: true, leaks: 0, corruptions: 0, leaksFixed: 0, corruptionsFixed: 0, checkErrors: 0 };
  let stdout: string;
  try {
    ({ stdout } = await run('qemu-img', [...args, p], { retries: 0 }));
  } catch (e) {
    const err = e as CommandError & { exitCode?: number };
    // qemu-img check exits 2 (corruptions) or 3 (leaks) with its JSON report on stdout.
    const out = (e as { stdout?: string }).stdout;
    if (out && (err.exitCode === 2 || err.exitCode === 3)) stdout = out;
    else if (err.exitCode === 63 || /does not support checks/.test(err.message)) return { ...base, checkable: false };
    // Leak repair gives up when the refcount structures themselves are broken: report what
    // a read-only check finds (corruptions, which need --repair=all).
    else if (opts.repair === 'leaks' && /need to rebuild refcount structures/.test(err.stderr)) return checkImage(p, { inUse: false, driver: opts.driver });
    else return { ...base, error: err.message };
  }
  const j = JSON.parse(stdout) as Record<string, number | string>;
  return {
    ...base,
    format: String(j.format ?? ''),
    leaks: Number(j.leaks ?? 0),
    corruptions: Number(j.corruptions ?? 0),
    leaksFixed: Number(j['leaks-fixed'] ?? 0),
    corruptionsFixed: Number(j['corruptions-fixed'] ?? 0),
    checkErrors: Number(j['check-errors'] ?? 0),
  };
}
