// A libvirtd of our own for tests and the benchmark: a private mount namespace with private
// /run/libvirt, /var/lib/libvirt, /etc/libvirt, /var/log/libvirt and /var/cache/libvirt, so
// the host's own libvirt objects are never seen or touched. Stopped by pid.
import { spawn } from 'node:child_process';
import { existsSync } from 'node:fs';
import { copyFile, mkdir, mkdtemp, readdir, readFile, readlink, rm } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import path from 'node:path';
import { execa } from 'execa';

export interface PrivateLibvirtd {
  /** connection URI through the private socket (usable from outside the namespace) */
  uri: string;
  pid: number;
  base: string;
  /** argv prefix that runs a command inside the daemon's mount namespace */
  nsenter: string[];
  stop(): Promise<void>;
}

const DIRS: Record<string, string> = {
  run: '/run/libvirt',
  lib: '/var/lib/libvirt',
  etc: '/etc/libvirt',
  log: '/var/log/libvirt',
  cache: '/var/cache/libvirt',
};

export interface PrivateLibvirtdOptions {
  /**
   * 'root-only': inside the namespace /dev/kvm is a root:root 0600 node, as on hosts without
   * udev, whatever the host's own node is (only where the host has /dev/kvm to cover).
   */
  kvm?: 'host' | 'root-only';
  /**
   * Directories of the host given a private, empty copy inside the namespace (a simulated
   * host's own /srv, say): what runs through `nsenter` sees that copy, under base/private/N.
   */
  privateDirs?: string[];
}

export async function startPrivateLibvirtd(opts: PrivateLibvirtdOptions = {}): Promise<PrivateLibvirtd> {
  const base = await mkdtemp(path.join(tmpdir(), 'vr-libvirtd-'));
  const kvmNode = path.join(base, 'kvm');
  const coverKvm = opts.kvm === 'root-only' && existsSync('/dev/kvm');
  if (coverKvm) await execa('mknod', ['-m', '0600', kvmNode, 'c', '10', '232']);
  for (const [d, target] of Object.entries(DIRS)) {
    await mkdir(path.join(base, d), { recursive: true });
    await mkdir(target, { recursive: true }); // mount points must exist on the host
  }
  const privateDirs = opts.privateDirs ?? [];
  for (const [i, target] of privateDirs.entries()) {
    await mkdir(path.join(base, 'private', String(i)), { recursive: true });
    await mkdir(target, { recursive: true });
  }
  // Daemon settings only: no copied pool, network or domain definitions, which would autostart.
  for (const f of await readdir('/etc/libvirt').catch(() => [] as string[])) {
    if (f.endsWith('.conf')) await copyFile(path.join('/etc/libvirt', f), path.join(base, 'etc', f));
  }
  const q = (s: string) => `'${s.replace(/'/g, `'\\''`)}'`;
  const script = [
    'set -e',
    ...Object.entries(DIRS).map(([d, target]) => `mount --bind ${q(path.join(base, d))} ${q(target)}`),
    ...privateDirs.map((target, i) => `mount --bind ${q(path.join(base, 'private', String(i)))} ${q(target)}`),
    ...(coverKvm ? [`mount --bind ${q(kvmNode)} /dev/kvm`] : []),
    `virtlogd -d -p ${q(path.join(base, 'run', 'virtlogd.pid'))}`,
    `exec libvirtd -p ${q(path.join(base, 'run', 'libvirtd.pid'))}`,
  ].join('\n');
  // unshare and sh both exec: the child's pid is libvirtd's.
  const child = spawn('unshare', ['-m', '--propagation', 'private', 'sh', '-c', script], { stdio: ['ignore', 'ignore', 'pipe'], detached: true });
  let stderr = '';
  child.stderr!.on('data', (d: Buffer) => (stderr += d.toString()));
  const pid = child.pid!;
  const uri = `qemu:///system?socket=${path.join(base, 'run', 'libvirt-sock')}`;
  const exited = new Promise<void>((resolve) => child.once('exit', () => resolve()));
  let up = false;
  for (let i = 0; i < 200 && child.exitCode === null; i++) {
    const r = await execa('virsh', ['-q', '-c', uri, 'uri'], { reject: false });
    if (r.exitCode === 0) {
      up = true;
      break;
    }
    await new Promise((res) => setTimeout(res, 100));
  }
  child.unref();
  const self: PrivateLibvirtd = {
    uri,
    pid,
    base,
    nsenter: ['nsenter', `--mount=/proc/${pid}/ns/mnt`, '--'],
    stop: async () => {
      const ns = await readlink(`/proc/${pid}/ns/mnt`).catch(() => undefined);
      process.kill(pid, 'SIGTERM');
      const timeout = new Promise<'timeout'>((res) => setTimeout(() => res('timeout'), 10_000));
      if ((await Promise.race([exited, timeout])) === 'timeout') process.kill(pid, 'SIGKILL');
      // virtlogd and any guest or helper left in the namespace go too; nothing else is touched.
      if (ns) {
        for (const p of await readdir('/proc')) {
          if (!/^\d+$/.test(p)) continue;
          const link = await readlink(`/proc/${p}/ns/mnt`).catch(() => undefined);
          if (link === ns) {
            try {
              process.kill(Number(p), 'SIGKILL');
            } catch {
              /* already gone */
            }
          }
        }
      }
      const logPid = Number((await readFile(path.join(base, 'run', 'virtlogd.pid'), 'utf8').catch(() => '0')).trim());
      if (logPid) {
        try {
          process.kill(logPid, 'SIGKILL');
        } catch {
          /* already gone */
        }
      }
      await rm(base, { recursive: true, force: true });
    },
  };
  if (!up) {
    await self.stop().catch(() => undefined);
    throw new Error(`private libvirtd did not start: ${stderr.trim().split('\n').slice(-3).join(' / ')}`);
  }
  return self;
}
