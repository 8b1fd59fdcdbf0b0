// Per-disk I/O of domains, from one `virsh domstats --block --raw` for all of them (the
// storage guide's monitoring: bytes and requests read and written, flushes, and allocation
// against capacity, which shows a qcow2 image growing).
import type { Virsh } from './virsh.js';

export interface DiskStats {
  vm: string;
  disk: string;
  readBytes: number;
  writeBytes: number;
  readRequests: number;
  writeRequests: number;
  flushRequests: number;
  allocation?: number;
  capacity?: number;
}

/** domstats' text: "Domain: 'NAME'" then "  block.N.FIELD=VALUE" lines. */
export function parseDomstats(text: string): DiskStats[] {
  const out: DiskStats[] = [];
  let vm: string | undefined;
  let disks = new Map<string, Record<string, string>>();
  const flush = () => {
    if (!vm) return;
    for (const f of disks.values()) {
      if (!f.name) continue;
      const n = (k: string) => Number(f[k] ?? 0);
      out.push({
        vm,
        disk: f.name,
        readBytes: n('rd.bytes'),
        writeBytes: n('wr.bytes'),
        readRequests: n('rd.reqs'),
        writeRequests: n('wr.reqs'),
        flushRequests: n('fl.reqs'),
        allocation: f.allocation === undefined ? undefined : Number(f.allocation),
        capacity: f.capacity === undefined ? undefined : Number(f.capacity),
      });
    }
  };
  for (const line of text.split('\n')) {
    const d = /^Domain: '(.*)'$/.exec(line.trim());
    if (d) {
      flush();
      vm = d[1];
      disks = new Map();
      continue;
    }
    const m = /^block\.(\d+)\.([a-z.]+)=(.*)$/.exec(line.trim());
    if (!m) continue;
    const f = disks.get(m[1]!) ?? {};
    f[m[2]!] = m[3]!;
    disks.set(m[1]!, f);
  }
  flush();
  return out;
}

export async function diskStats(virsh: Virsh): Promise<DiskStats[]> {
  return parseDomstats(await virsh.exec(['domstats', '--block', '--raw']));
}
