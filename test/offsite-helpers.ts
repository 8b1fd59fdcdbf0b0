// Off-site targets on this machine for tests: s3rver (S3), Azurite (Azure Blob, telemetry off)
// and an sshd of our own on 127.0.0.1, each on a free port, each stopped by the test.
import { spawn, type ChildProcess } from 'node:child_process';
import { mkdir, readFile, writeFile } from 'node:fs/promises';
import net from 'node:net';
import path from 'node:path';
import { execa } from 'execa';
import { ROOT } from './helpers.js';

const bin = (name: string) => path.join(ROOT, 'node_modules', '.bin', name);

/** Exited, or ended by a signal (then exitCode stays null). */
const ended = (c: ChildProcess) => c.exitCode !== null || c.signalCode !== null;

export async function freePort(): Promise<number> {
  return new Promise((resolve, reject) => {
    const s = net.createServer();
    s.once('error', reject);
    s.listen(0, '127.0.0.1', () => {
      const { port } = s.address() as net.AddressInfo;
      s.close(() => resolve(port));
    });
  });
}

async function listening(port: number, what: string, child: ChildProcess, log: () => string): Promise<void> {
  const end = Date.now() + 30_000;
  for (;;) {
    if (ended(child)) throw new Error(`${what} exited: ${log()}`);
    const ok = await new Promise<boolean>((r) => {
      const c = net.connect(port, '127.0.0.1', () => {
        c.end();
        r(true);
      });
      c.once('error', () => r(false));
    });
    if (ok) return;
    if (Date.now() > end) throw new Error(`${what} did not listen on ${port}: ${log()}`);
    await new Promise((r) => setTimeout(r, 100));
  }
}

export interface Server {
  port: number;
  stop(): Promise<void>;
  start(): Promise<void>;
}

/** Starts `argv` (again after stop(), on the same port and data) and waits until it listens. */
function server(what: string, port: number, argv: () => string[]): Server {
  let child: ChildProcess | undefined;
  let out = '';
  const s: Server = {
    port,
    async start() {
      const [cmd, ...args] = argv();
      out = '';
      child = spawn(cmd!, args, { stdio: ['ignore', 'pipe', 'pipe'] });
      child.stdout!.on('data', (d: Buffer) => (out += d.toString()));
      child.stderr!.on('data', (d: Buffer) => (out += d.toString()));
      await listening(port, what, child, () => out);
    },
    async stop() {
      if (!child || ended(child)) return;
      const exited = new Promise((r) => child!.once('exit', r));
      child.kill('SIGTERM');
      // Azurite waits for idle keep-alive connections to close: not for long.
      const timer = setTimeout(() => child?.kill('SIGKILL'), 3000);
      await exited;
      clearTimeout(timer);
    },
  };
  return s;
}

export async function startS3rver(dir: string, bucket: string): Promise<Server & { endpoint: string; credentials: string }> {
  await mkdir(dir, { recursive: true });
  const port = await freePort();
  const s = server('s3rver', port, () => [bin('s3rver'), '-d', dir, '-a', '127.0.0.1', '-p', String(port), '--configure-bucket', bucket, '--silent']);
  await s.start();
  // s3rver's fixed test credentials.
  return Object.assign(s, { endpoint: `http://127.0.0.1:${port}`, credentials: '[default]\naws_access_key_id = S3RVER\naws_secret_access_key = S3RVER\n' });
}

/** Azurite's documented development account and key (public, for emulators only). */
const DEV_ACCOUNT = 'devstoreaccount1';
const DEV_KEY = 'Eby8vdM02xNOcqFlqUwJPLlmEtlCDXJ1OUzFT50uSRZ6IFsuFq2UVErCz4I6tq/K1SZFPTOtr/KBHBeksoGMGw==';

export async function startAzurite(dir: string): Promise<Server & { connectionString: string; account: string }> {
  await mkdir(dir, { recursive: true });
  const port = await freePort();
  const s = server('azurite', port, () => [
    bin('azurite-blob'),
    '--blobHost',
    '127.0.0.1',
    '--blobPort',
    String(port),
    '--location',
    dir,
    '--skipApiVersionCheck',
    '--loose',
    '--disableTelemetry',
  ]);
  await s.start();
  return Object.assign(s, {
    account: DEV_ACCOUNT,
    connectionString: `DefaultEndpointsProtocol=http;AccountName=${DEV_ACCOUNT};AccountKey=${DEV_KEY};BlobEndpoint=http://127.0.0.1:${port}/${DEV_ACCOUNT};`,
  });
}

/** An sshd of our own on 127.0.0.1 (root by key only, sftp), its host key in a known_hosts file, a client key. */
/** `prefix`: runs sshd through it (nsenter into a private libvirtd's namespace: a "remote" host). */
export async function startSshd(dir: string, prefix: string[] = []): Promise<Server & { identityFile: string; knownHostsFile: string }> {
  await mkdir(dir, { recursive: true, mode: 0o700 });
  await mkdir('/run/sshd', { recursive: true }); // its privilege separation directory
  const port = await freePort();
  const key = (name: string) => execa('ssh-keygen', ['-q', '-t', 'ed25519', '-N', '', '-f', path.join(dir, name)]);
  await key('host_key');
  await key('client_key');
  await writeFile(path.join(dir, 'authorized_keys'), await readFile(path.join(dir, 'client_key.pub')), { mode: 0o600 });
  await writeFile(path.join(dir, 'known_hosts'), `[127.0.0.1]:${port} ${await readFile(path.join(dir, 'host_key.pub'), 'utf8')}`);
  const conf = path.join(dir, 'sshd_config');
  await writeFile(
    conf,
    [
      `Port ${port}`,
      'ListenAddress 127.0.0.1',
      `HostKey ${dir}/host_key`,
      `PidFile ${dir}/sshd.pid`,
      `AuthorizedKeysFile ${dir}/authorized_keys`,
      'PermitRootLogin prohibit-password',
      'PasswordAuthentication no',
      'KbdInteractiveAuthentication no',
      'UsePAM no',
      'StrictModes no',
      'Subsystem sftp internal-sftp',
      '',
    ].join('\n'),
  );
  const s = server('sshd', port, () => [...prefix, '/usr/sbin/sshd', '-D', '-e', '-f', conf]);
  await s.start();
  return Object.assign(s, { identityFile: path.join(dir, 'client_key'), knownHostsFile: path.join(dir, 'known_hosts') });
}
