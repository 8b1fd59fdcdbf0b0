// The desired state from a git repository: cloned once into the state directory, fetched on
// every interval (and on webhook), checked out at a branch, tag or commit. Access is a deploy
// key over SSH (host keys always checked) or a token over HTTPS (sent to the repository's own
// origin only), both handed to git through its environment: never in an argument, a URL or
// the clone's configuration. With trusted keys, a commit is checked out only once its
// signature (GPG or SSH) verifies against them and nothing else on the machine.
import { mkdir, open, readFile, rename, rm, stat, writeFile } from 'node:fs/promises';
import path from 'node:path';
import { simpleGit, type SimpleGit } from 'simple-git';
import { CommandError, run } from './exec.js';

export interface GitSource {
  url: string;
  ref: string;
  /** subdirectory holding the YAML */
  subdir: string;
  /** where the clone lives */
  dir: string;
  access?: GitAccess;
  /** commits must be signed by one of these keys (prepared by trustKeys) */
  trust?: GitTrust;
}

export interface GitAccess {
  /** a private key for SSH URLs (a deploy key); only it is offered */
  sshKeyFile?: string;
  /** the host keys SSH accepts; default: ssh's own known_hosts. Unknown hosts are refused either way */
  knownHostsFile?: string;
  /** a file holding an HTTPS token, sent as basic auth's password to the URL's origin */
  tokenFile?: string;
  /** basic auth's user name with the token (GitHub takes x-access-token, GitLab oauth2 or any) */
  username?: string;
}

export interface GitTrust {
  /** a private GnuPG home holding only the trusted GPG keys (empty for SSH keys) */
  gnupgHome: string;
  /** an allowed-signers file holding only the trusted SSH keys (empty for GPG keys) */
  allowedSigners: string;
  /** what the keys file held, for messages */
  kind: 'gpg' | 'ssh';
}

export interface Revision {
  /** e.g. main@sha1:0123abcd… */
  revision: string;
  sha: string;
  /** the directory to read YAML from */
  path: string;
}

/** A revision whose signature does not verify: never checked out. */
export class UnverifiedRevision extends Error {
  constructor(
    readonly revision: string,
    readonly sha: string,
    reason: string,
  ) {
    super(`revision ${revision} is not signed by a trusted key: ${reason}`);
  }
}

const isSshUrl = (url: string) => url.startsWith('ssh://') || /^[^/:]+@[^/:]+:/.test(url);
const shellQuote = (a: string) => `'${a.replace(/'/g, "'\\''")}'`;

/** How a URL is shown: without user information or query (a token put there by mistake). */
export function displayGitUrl(url: string): string {
  try {
    const u = new URL(url);
    if (u.protocol === 'http:' || u.protocol === 'https:') return `${u.protocol}//${u.host}${u.pathname}`;
  } catch {
    /* scp-like: user@host:path, shown as it is (a user name is no secret) */
  }
  return url;
}

/** Why a URL is refused as given (credentials in it), or undefined. */
export function gitUrlProblem(url: string): string | undefined {
  const advice = 'put the token in a file and give --git-token-file (HTTPS), or a key with --git-ssh-key (SSH)';
  try {
    const u = new URL(url);
    if ((u.protocol === 'http:' || u.protocol === 'https:') && (u.password || u.username))
      return `has credentials in it (they would be stored in the clone and shown in messages); ${advice}`;
    if (u.password) return `has a password in it (it would be shown in messages); ${advice}`;
    if (u.search || u.hash) return `has a query or fragment (a token there would be stored in the clone and shown in messages); ${advice}`;
  } catch {
    // scp-like SSH (user@host:path): a "user:password@" is a password all the same.
    if (/^[^/@]*:[^/@]*@[^/:]+:/.test(url)) return `has a password in it (it would be shown in messages); ${advice}`;
  }
  return undefined;
}

/** git's environment for this source: how SSH connects, the token header, and never a prompt. */
async function gitEnv(src: GitSource): Promise<Record<string, string>> {
  // A server that stalls is given up on (under 1 KB/s for a minute), never waited for forever.
  const env: Record<string, string> = { GIT_TERMINAL_PROMPT: '0', GIT_SSH_VARIANT: 'ssh', GIT_HTTP_LOW_SPEED_LIMIT: '1000', GIT_HTTP_LOW_SPEED_TIME: '60' };
  const a = src.access ?? {};
  if (isSshUrl(src.url)) {
    // Strict always: an unknown or changed host key is refused, never learned; a dead peer is noticed.
    const ssh = ['ssh', '-o', 'BatchMode=yes', '-o', 'StrictHostKeyChecking=yes', '-o', 'ConnectTimeout=30', '-o', 'ServerAliveInterval=15', '-o', 'ServerAliveCountMax=4'];
    if (a.sshKeyFile) ssh.push('-i', a.sshKeyFile, '-o', 'IdentitiesOnly=yes');
    if (a.knownHostsFile) ssh.push('-o', `UserKnownHostsFile=${a.knownHostsFile}`, '-o', 'GlobalKnownHostsFile=/dev/null');
    env.GIT_SSH_COMMAND = ssh.map(shellQuote).join(' ');
  }
  if (a.tokenFile) {
    const token = (
      await readHead(a.tokenFile, 16 * 1024).catch((e: NodeJS.ErrnoException) => Promise.reject(new Error(`--git-token-file ${a.tokenFile}: ${e.code ?? e.message}`)))
    ).trim();
    if (!token) throw new Error(`--git-token-file ${a.tokenFile} is empty`);
    if (/\s/.test(token)) throw new Error(`--git-token-file ${a.tokenFile} holds more than one token (white space inside)`);
    // Scoped to the repository's origin; git matches http.<url>.* against the URL given, not where a redirect leads: with a token,
    // redirects are not followed (the header would go to the other host).
    const origin = new URL(src.url).origin;
    env.GIT_CONFIG_COUNT = '2';
    env.GIT_CONFIG_KEY_0 = `http.${origin}/.extraHeader`;
    env.GIT_CONFIG_VALUE_0 = `Authorization: Basic ${Buffer.from(`${a.username ?? 'x-access-token'}:${token}`).toString('base64')}`;
    env.GIT_CONFIG_KEY_1 = 'http.followRedirects';
    env.GIT_CONFIG_VALUE_1 = 'false';
  }
  return env;
}

// What the service's own environment may hold that would run a program of its choosing inside
// git (an editor, a pager, a prompt, another ssh) or reconfigure it: never passed on. A
// fetch and a checkout need none of them, and simple-git refuses to run with them.
const INHERITED_UNSAFE =
  /^(EDITOR|VISUAL|PAGER|PREFIX|SSH_ASKPASS|GIT_(ASKPASS|CONFIG(_.*)?|EDITOR|EXEC_PATH|EXTERNAL_DIFF|PAGER|PROXY_COMMAND|TEMPLATE_DIR|SEQUENCE_EDITOR|SSH|SSH_COMMAND))$/i;

// A git command that says nothing for this long is killed (a stalled server, a hung ssh).
const SILENT_MS = 5 * 60_000;

function gitAt(dir: string | undefined, env: Record<string, string>, signal?: AbortSignal): SimpleGit {
  const inherited = Object.fromEntries(Object.entries(process.env).filter(([k, v]) => v !== undefined && !INHERITED_UNSAFE.test(k))) as Record<string, string>;
  // The environment and configuration given here are reconcile's own, not a repository's.
  return simpleGit({
    ...(dir ? { baseDir: dir } : {}),
    timeout: { block: SILENT_MS },
    ...(signal ? { abort: signal } : {}),
    unsafe: { allowUnsafeSshCommand: true, allowUnsafeConfigEnvCount: true },
  }).env({ ...inherited, ...env });
}

/** Fetches, and resolves the ref to the commit it names now (nothing checked out). */
export async function fetchRef(src: GitSource, signal?: AbortSignal): Promise<{ revision: string; sha: string }> {
  await mkdir(path.dirname(src.dir), { recursive: true });
  const env = await gitEnv(src);
  const exists = await stat(path.join(src.dir, '.git')).then(
    () => true,
    () => false,
  );
  if (!exists) {
    // Cloned beside and renamed into place: a clone killed half-way is never taken for one.
    const tmp = `${src.dir}.cloning-${process.pid}`;
    await rm(tmp, { recursive: true, force: true });
    await gitAt(undefined, env, signal).clone(src.url, tmp, ['--no-checkout']);
    await rename(tmp, src.dir);
  }
  const git = gitAt(src.dir, env, signal);
  // A lock a killed git left (nothing else writes here: one agent per state directory).
  await rm(path.join(src.dir, '.git', 'index.lock'), { force: true });
  // The URL may have changed since the clone (a moved repository, --git given anew).
  await git.remote(['set-url', 'origin', src.url]);
  await git.fetch(['--prune', '--tags', '--force', 'origin']);
  // A branch follows origin; a tag or commit is taken as it is (never read as an option).
  const remoteBranch = (await git.branch(['-r'])).all.includes(`origin/${src.ref}`);
  const target = remoteBranch ? `origin/${src.ref}` : src.ref;
  const sha = (await git.raw(['rev-parse', '--verify', '--quiet', '--end-of-options', `${target}^{commit}`])).trim();
  if (!/^[0-9a-f]{40,64}$/.test(sha)) throw new Error(`--ref ${src.ref}: no such branch, tag or commit in ${displayGitUrl(src.url)}`);
  return { revision: `${src.ref}@sha1:${sha}`, sha };
}

export async function checkout(src: GitSource, sha: string): Promise<Revision> {
  const git = gitAt(src.dir, {});
  await git.checkout(['--force', '--detach', sha]);
  await git.clean('f', ['-d', '-x']);
  return { revision: `${src.ref}@sha1:${sha}`, sha, path: path.join(src.dir, src.subdir) };
}

/** The commit's signature against the trusted keys only (a private GnuPG home, our allowed signers). */
export async function verifyCommit(src: GitSource, head: { revision: string; sha: string }): Promise<string> {
  const t = src.trust!;
  try {
    const { stderr } = await run('git', ['-C', src.dir, '-c', `gpg.ssh.allowedSignersFile=${t.allowedSigners}`, 'verify-commit', '--raw', head.sha], {
      retries: 0,
      env: { GNUPGHOME: t.gnupgHome },
    });
    return stderr;
  } catch (e) {
    if (!(e instanceof CommandError) || e.exitCode === undefined) throw e;
    // git says nothing for a commit without a signature; gpg and ssh-keygen say why one fails.
    // (run() puts execa's own "Command failed" line where the command said nothing.)
    const said = e.stderr.startsWith('Command failed with exit code') ? '' : e.stderr.trim();
    const reason =
      !said || /no signature found/i.test(said)
        ? 'the commit is not signed'
        : /No principal matched|No public key|public key not found/i.test(said)
          ? `it is signed with a key that is not one of the trusted keys (${/(SHA256:\S+|key ID \S+|using \S+ key \S+)/.exec(said)?.[1] ?? 'unknown key'})`
          : `its signature does not verify: ${said.split('\n').slice(-2).join(' ').slice(0, 300)}`;
    throw new UnverifiedRevision(head.revision, head.sha, reason);
  }
}

/**
 * The trusted keys file made into what verification reads: OpenSSH public keys (or
 * allowed-signers lines) into an allowed-signers file; anything else is taken as GPG public
 * keys and imported into a GnuPG home of its own. Both live in `dir`, made anew each start so
 * that a key removed from the file is no longer trusted.
 */
export async function trustKeys(keysFile: string, dir: string): Promise<GitTrust> {
  const text = await readFile(keysFile, 'utf8').catch((e: NodeJS.ErrnoException) => Promise.reject(new Error(`--verify-commits ${keysFile}: ${e.code ?? e.message}`)));
  await rm(dir, { recursive: true, force: true });
  const gnupgHome = path.join(dir, 'gnupg');
  await mkdir(gnupgHome, { recursive: true, mode: 0o700 });
  const allowedSigners = path.join(dir, 'allowed_signers');
  const lines = text
    .split('\n')
    .map((l) => l.trim())
    .filter((l) => l && !l.startsWith('#'));
  if (!lines.length) throw new Error(`--verify-commits ${keysFile} is empty: it must hold the public keys (OpenSSH or GPG) that sign commits`);
  if (/PRIVATE KEY/.test(text)) throw new Error(`--verify-commits ${keysFile} holds a private key: give the public one (the .pub file, or gpg --armor --export)`);
  const sshKey = /^(ssh-(ed25519|rsa|dss)|ecdsa-sha2-\S+|sk-\S+)\s+[A-Za-z0-9+/=]+/;
  if (lines.length && lines.every((l) => sshKey.test(l) || sshKey.test(l.replace(/^\S+\s+(\S*namespaces=\S+\s+)?/, '')))) {
    // A bare public key signs for anyone (principal "*"), for git only.
    await writeFile(allowedSigners, `${lines.map((l) => (sshKey.test(l) ? `* namespaces="git" ${l}` : l)).join('\n')}\n`, { mode: 0o600 });
    return { gnupgHome, allowedSigners, kind: 'ssh' };
  }
  if (lines.some((l) => sshKey.test(l)))
    throw new Error(`--verify-commits ${keysFile} mixes OpenSSH and GPG keys: give one kind (a file of OpenSSH public keys, or GPG public keys)`);
  await writeFile(allowedSigners, '', { mode: 0o600 });
  try {
    await run('gpg', ['--batch', '--quiet', '--no-autostart', '--homedir', gnupgHome, '--import', keysFile], { retries: 0 });
    const { stdout } = await run('gpg', ['--batch', '--no-autostart', '--homedir', gnupgHome, '--with-colons', '--list-keys'], { retries: 0 });
    if (!/^pub:/m.test(stdout)) throw new Error('no public key in it');
  } catch (e) {
    throw new Error(`--verify-commits ${keysFile}: neither OpenSSH public keys nor GPG public keys (${(e as Error).message.split('\n')[0]})`);
  }
  return { gnupgHome, allowedSigners, kind: 'gpg' };
}

/** The first `max` bytes of a file, as text: a token file that is a device or huge is not read whole. */
async function readHead(file: string, max: number): Promise<string> {
  const fh = await open(file, 'r');
  try {
    const buf = Buffer.alloc(max);
    const { bytesRead } = await fh.read(buf, 0, max, 0);
    return buf.subarray(0, bytesRead).toString('utf8');
  } finally {
    await fh.close();
  }
}
