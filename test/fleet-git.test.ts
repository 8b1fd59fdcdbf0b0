// How a fleet's agents reach the repository and what they trust: an SSH deploy key with strict
// host key checking (sshd on 127.0.0.1, started here), an HTTPS token (git http-backend behind
// a TLS server started here, with its own CA), and signed commits (SSH and GPG signatures,
// keys made here): an unsigned or wrongly signed head is not applied, the last good revision
// stays in force (across a restart too), and /status and /metrics say why. Secrets are looked
// for everywhere they must not be: the log, /status, the clone's configuration, argv.
import { spawn } from 'node:child_process';
import { existsSync } from 'node:fs';
import { readFile, rename, rm, writeFile } from 'node:fs/promises';
import http from 'node:http';
import https from 'node:https';
import type { AddressInfo } from 'node:net';
import path from 'node:path';
import { execa } from 'execa';
import { afterAll, afterEach, describe, expect, it } from 'vitest';
import { qemuInfo, sandbox, type Sandbox } from './helpers.js';
import { startSshd } from './offsite-helpers.js';
import { procs, startWatch, until } from './watch-helpers.js';

const MiB = 1024 * 1024;
const boxes: Sandbox[] = [];
const cleanups: (() => Promise<unknown>)[] = [];
afterEach(() => {
  for (const p of procs.splice(0)) if (p.exitCode === null) p.kill('SIGKILL');
});
afterAll(async () => {
  for (const c of cleanups) await c().catch(() => undefined);
  for (const b of boxes) await b.cleanup();
});

const size = async (f: string) => (await qemuInfo(f))['virtual-size'] as number;

/** A bare repository and a work tree pushing to it; commit() takes extra `git -c` settings and env (signing). */
async function repository(sb: Sandbox) {
  const bare = path.join(sb.dir, 'repo.git');
  const work = path.join(sb.dir, 'work');
  await execa('git', ['init', '-q', '--bare', '-b', 'main', bare]);
  await execa('git', ['clone', '-q', bare, work]);
  const git = (a: string[], env: Record<string, string> = {}) => execa('git', ['-C', work, '-c', 'user.name=t', '-c', 'user.email=t@example.com', ...a], { env });
  const commit = async (sizeText: string, sign: { config?: string[]; env?: Record<string, string> } = {}) => {
    await writeFile(path.join(work, 'storage.yaml'), `version: 1\nimages:\n  g: { path: ${sb.dir}/g.qcow2, size: ${sizeText} }\n`);
    await git(['add', '-A']);
    await git([...(sign.config ?? []).flatMap((c) => ['-c', c]), 'commit', '-q', ...(sign.config ? ['-S'] : []), '-m', sizeText], sign.env);
    await git(['push', '-q', 'origin', 'HEAD:main']);
    return `main@sha1:${String((await git(['rev-parse', 'HEAD'])).stdout).trim()}`;
  };
  return { bare, commit };
}

const noSecretIn = async (what: string[], secrets: string[]) => {
  for (const w of what) for (const s of secrets) expect(w.includes(s), `a secret appears in: ${w.slice(0, 200)}`).toBe(false);
};

describe('git over SSH with a deploy key', () => {
  it('clones and follows the repository with only that key; a host key not in --known-hosts is refused, never learned', { timeout: 120_000 }, async () => {
    const sb = await sandbox('git-ssh');
    boxes.push(sb);
    const sshd = await startSshd(path.join(sb.dir, 'sshd'));
    cleanups.push(() => sshd.stop());
    const repo = await repository(sb);
    const first = await repo.commit('8M');
    const url = `ssh://root@127.0.0.1:${sshd.port}${repo.bare}`;
    // A known_hosts naming another key for this host: the connection is refused.
    await execa('ssh-keygen', ['-q', '-t', 'ed25519', '-N', '', '-f', path.join(sb.dir, 'other_host_key')]);
    const wrongHosts = `[127.0.0.1]:${sshd.port} ${await readFile(path.join(sb.dir, 'other_host_key.pub'), 'utf8')}`;
    await writeFile(path.join(sb.dir, 'wrong_known_hosts'), wrongHosts);
    const wrong = await startWatch(sb, ['--git', url, '--git-ssh-key', sshd.identityFile, '--known-hosts', path.join(sb.dir, 'wrong_known_hosts'), '--interval', '1m']);
    const st = await until(async () => {
      const s = await wrong.status();
      return s.lastReconcile?.ok === false && s;
    }, 'the connection to be refused');
    expect(st.lastReconcile.error).toMatch(/Host key verification failed|REMOTE HOST IDENTIFICATION HAS CHANGED/);
    expect(await readFile(path.join(sb.dir, 'wrong_known_hosts'), 'utf8')).toBe(wrongHosts);
    wrong.proc.kill('SIGTERM');
    await wrong.exit();

    const w = await startWatch(sb, ['--git', url, '--git-ssh-key', sshd.identityFile, '--known-hosts', sshd.knownHostsFile, '--interval', '2s']);
    await until(async () => (await w.status()).appliedRevision === first, 'the first commit to be applied over SSH');
    const second = await repo.commit('12M');
    await until(async () => (await w.status()).appliedRevision === second, 'the next commit to be applied over SSH');
    expect(await size(path.join(sb.dir, 'g.qcow2'))).toBe(12 * MiB);
    const key = await readFile(sshd.identityFile, 'utf8');
    const keyBody = key.split('\n')[1]!;
    await noSecretIn([w.log(), JSON.stringify(await w.status()), await readFile(path.join(sb.stateDir, 'git', '.git', 'config'), 'utf8')], [keyBody]);
    w.proc.kill('SIGTERM');
    expect(await w.exit()).toBe(0);
  });
});

/** git http-backend behind HTTPS (a certificate made here), answering only the right basic auth. */
async function httpsGit(dir: string, root: string, token: string) {
  await execa('openssl', [
    'req',
    '-x509',
    '-nodes',
    '-newkey',
    'rsa:2048',
    '-days',
    '1',
    '-subj',
    '/CN=127.0.0.1',
    '-addext',
    'subjectAltName=IP:127.0.0.1',
    '-keyout',
    path.join(dir, 'tls.key'),
    '-out',
    path.join(dir, 'tls.crt'),
  ]);
  const seen: { auth?: string; path: string }[] = [];
  const want = `Basic ${Buffer.from(`x-access-token:${token}`).toString('base64')}`;
  const server = https.createServer({ key: await readFile(path.join(dir, 'tls.key')), cert: await readFile(path.join(dir, 'tls.crt')) }, (req, res) => {
    const u = new URL(req.url!, 'https://x');
    seen.push({ auth: req.headers.authorization, path: u.pathname });
    if (req.headers.authorization !== want) {
      res.writeHead(401, { 'WWW-Authenticate': 'Basic realm="git"' });
      res.end();
      return;
    }
    const cgi = spawn('git', ['http-backend'], {
      env: {
        PATH: process.env.PATH,
        GIT_PROJECT_ROOT: root,
        GIT_HTTP_EXPORT_ALL: '1',
        PATH_INFO: u.pathname,
        QUERY_STRING: u.search.slice(1),
        REQUEST_METHOD: req.method,
        CONTENT_TYPE: req.headers['content-type'] ?? '',
        HTTP_CONTENT_ENCODING: req.headers['content-encoding'] ?? '',
        HTTP_GIT_PROTOCOL: String(req.headers['git-protocol'] ?? ''),
        REMOTE_USER: 'agent',
      },
    });
    req.pipe(cgi.stdin);
    const chunks: Buffer[] = [];
    cgi.stdout.on('data', (d: Buffer) => chunks.push(d));
    cgi.on('close', () => {
      const out = Buffer.concat(chunks);
      const end = out.indexOf('\r\n\r\n');
      const head = out.subarray(0, end).toString().split('\r\n');
      const headers: Record<string, string> = {};
      let status = 200;
      for (const h of head) {
        const [k, ...v] = h.split(':');
        if (k!.toLowerCase() === 'status') status = Number.parseInt(v.join(':').trim(), 10);
        else headers[k!] = v.join(':').trim();
      }
      res.writeHead(status, headers);
      res.end(out.subarray(end + 4));
    });
  });
  await new Promise<void>((r) => server.listen(0, '127.0.0.1', r));
  return { url: `https://127.0.0.1:${(server.address() as AddressInfo).port}`, ca: path.join(dir, 'tls.crt'), seen, close: () => new Promise((r) => server.close(r)) };
}

describe('git over HTTPS with a token', () => {
  it('sends the token from its file to the repository only, and it is nowhere else: not the log, /status, the clone, argv', { timeout: 120_000 }, async () => {
    const sb = await sandbox('git-https');
    boxes.push(sb);
    const repo = await repository(sb);
    const token = 'tok-3f9a1c7e5b2d';
    const srv = await httpsGit(sb.dir, sb.dir, token);
    cleanups.push(srv.close);
    // The agent trusts the test's certificate as a host would trust its CA (git's own setting).
    process.env.GIT_SSL_CAINFO = srv.ca;
    cleanups.push(async () => delete process.env.GIT_SSL_CAINFO);
    const first = await repo.commit('8M');
    const url = `${srv.url}/repo.git`;
    const none = await startWatch(sb, ['--git', url, '--interval', '1m']);
    const st = await until(async () => {
      const s = await none.status();
      return s.lastReconcile?.ok === false && s;
    }, 'the clone without a token to fail');
    expect(st.lastReconcile.error).toMatch(/Authentication failed|could not read Username|terminal prompts disabled|401/);
    none.proc.kill('SIGTERM');
    await none.exit();

    await writeFile(path.join(sb.dir, 'token'), `${token}\n`, { mode: 0o600 });
    const w = await startWatch(sb, ['--git', url, '--git-token-file', path.join(sb.dir, 'token'), '--interval', '2s']);
    await until(async () => (await w.status()).appliedRevision === first, 'the first commit to be applied over HTTPS');
    expect(await size(path.join(sb.dir, 'g.qcow2'))).toBe(8 * MiB);
    expect(srv.seen.some((r) => r.auth?.startsWith('Basic '))).toBe(true);
    const argv = await readFile(`/proc/${w.proc.pid}/cmdline`, 'utf8');
    const basic = Buffer.from(`x-access-token:${token}`).toString('base64');
    await noSecretIn([w.log(), JSON.stringify(await w.status()), await readFile(path.join(sb.stateDir, 'git', '.git', 'config'), 'utf8'), argv], [token, basic]);
    w.proc.kill('SIGTERM');
    expect(await w.exit()).toBe(0);
  });

  it('an option file that is not there is a usage error at start, naming the option', async () => {
    const sb = await sandbox('git-missing-files');
    boxes.push(sb);
    for (const opt of ['--git-token-file', '--git-ssh-key', '--known-hosts', '--verify-commits']) {
      const r = await sb.run('watch', '--git', 'https://git.example/fleet.git', opt, path.join(sb.dir, 'nope'));
      expect(r.code, opt).toBe(64);
      expect(r.stderr).toMatch(new RegExp(`${opt} \\S+nope: no such file`));
    }
  });

  it('a redirect elsewhere is not followed with the token: the other host never sees it (adversarial pass)', { timeout: 60_000 }, async () => {
    const sb = await sandbox('git-redirect');
    boxes.push(sb);
    const seen: (string | undefined)[] = [];
    const other = http.createServer((req, res) => {
      seen.push(req.headers.authorization);
      res.writeHead(404).end();
    });
    await new Promise<void>((r) => other.listen(0, '127.0.0.1', r));
    const to = `http://127.0.0.1:${(other.address() as AddressInfo).port}`;
    const redirector = http.createServer((req, res) => res.writeHead(302, { location: `${to}${req.url}` }).end());
    await new Promise<void>((r) => redirector.listen(0, '127.0.0.1', r));
    cleanups.push(
      () => new Promise((r) => other.close(r)),
      () => new Promise((r) => redirector.close(r)),
    );
    await writeFile(path.join(sb.dir, 'token'), 'tok-redirected\n', { mode: 0o600 });
    const w = await startWatch(sb, [
      '--git',
      `http://127.0.0.1:${(redirector.address() as AddressInfo).port}/repo.git`,
      '--git-token-file',
      path.join(sb.dir, 'token'),
      '--interval',
      '1m',
    ]);
    await until(async () => (await w.status()).lastReconcile?.ok === false, 'the fetch to fail');
    expect(seen.filter((a) => a !== undefined)).toEqual([]);
    w.proc.kill('SIGTERM');
    await w.exit();
  });

  it('a URL with credentials in it is refused before anything runs, without echoing them', async () => {
    const sb = await sandbox('git-url-creds');
    boxes.push(sb);
    const r = await sb.run('watch', '--git', 'https://bot:s3cr3t-token@git.example/fleet.git');
    expect(r.code).toBe(64);
    expect(r.stderr).toMatch(/--git https:\/\/git\.example\/fleet\.git has credentials in it .* --git-token-file/);
    expect(r.stderr).not.toMatch(/s3cr3t-token/);
  });
});

describe('the repository out of reach (adversarial pass)', () => {
  it('the revision in force is still enforced (drift healed), the agent is not ready and says why; back when the repository is', { timeout: 90_000 }, async () => {
    const sb = await sandbox('git-unreachable');
    boxes.push(sb);
    const repo = await repository(sb);
    const first = await repo.commit('8M');
    const w = await startWatch(sb, ['--git', `file://${repo.bare}`, '--interval', '2s']);
    await until(async () => (await w.status()).appliedRevision === first, 'the first commit');
    await rename(repo.bare, `${repo.bare}.away`);
    await rm(path.join(sb.dir, 'g.qcow2'));
    await until(async () => existsSync(path.join(sb.dir, 'g.qcow2')), 'the deleted image to come back with the repository away', 20_000);
    const st = await until(async () => {
      const s = await w.status();
      return s.sourceError && s.ready === false && s;
    }, 'the source error to show');
    expect(st.ready).toBe(false);
    expect(st.notReadyReason).toMatch(/cannot read the repository: .*; main@sha1:\w+ stays in force/);
    expect(w.log()).toMatch(/cannot read the repository/);
    await rename(`${repo.bare}.away`, repo.bare);
    await until(async () => (await w.status()).ready === true, 'ready again once the repository is back');
    // Two agents on one state directory: the second is refused.
    const second = await sb.run('watch', '--git', `file://${repo.bare}`, '--listen', '127.0.0.1:0');
    expect(second.code).toBe(1);
    expect(second.stderr).toMatch(/another reconcile watch \(pid \d+\) runs on/);
    w.proc.kill('SIGTERM');
    expect(await w.exit()).toBe(0);
  });
});

describe('signed commits (--verify-commits)', () => {
  it('SSH signatures: an unsigned head and one signed by another key are not applied, the last good stays (also after a restart); /status and /metrics say why', {
    timeout: 180_000,
  }, async () => {
    const sb = await sandbox('git-signed');
    boxes.push(sb);
    const repo = await repository(sb);
    for (const k of ['signer', 'intruder']) await execa('ssh-keygen', ['-q', '-t', 'ed25519', '-N', '', '-C', k, '-f', path.join(sb.dir, k)]);
    const by = (k: string) => ({ config: ['gpg.format=ssh', `user.signingkey=${path.join(sb.dir, k)}`] });
    const good = await repo.commit('8M', by('signer'));
    const args = ['--git', `file://${repo.bare}`, '--verify-commits', path.join(sb.dir, 'signer.pub'), '--interval', '2s'];
    let w = await startWatch(sb, args);
    await until(async () => (await w.status()).appliedRevision === good, 'the signed commit to be applied');

    const unsigned = await repo.commit('10M');
    let st = await until(async () => {
      const s = await w.status();
      return s.rejectedRevision?.revision === unsigned && s;
    }, 'the unsigned commit to be rejected');
    expect(st.rejectedRevision.reason).toBe('signature');
    expect(st.rejectedRevision.error).toMatch(/not signed by a trusted key: the commit is not signed/);
    expect(st.appliedRevision).toBe(good);
    expect(st.ready).toBe(false);
    expect(await size(path.join(sb.dir, 'g.qcow2'))).toBe(8 * MiB);
    const metrics = await (await fetch(`${w.url}/metrics`)).text();
    expect(metrics).toMatch(/^virt_reconcile_revision_rejected\{reason="signature",host="[^"]+"\} 1$/m);
    expect(metrics).toMatch(/^virt_reconcile_signature_rejections_total\{host="[^"]+"\} 1$/m);
    expect(metrics).toMatch(new RegExp(`^virt_reconcile_source_revision_info\\{revision="${unsigned}",host="[^"]+"\\} 1$`, 'm'));
    expect(w.log()).toMatch(/revision main@sha1:\w+ is not signed by a trusted key: the commit is not signed; it is not applied, main@sha1:\w+ stays in force/);

    const forged = await repo.commit('12M', by('intruder'));
    st = await until(async () => {
      const s = await w.status();
      return s.rejectedRevision?.revision === forged && s;
    }, 'the commit signed by another key to be rejected');
    expect(st.appliedRevision).toBe(good);
    expect(st.rejectedRevision.error).toMatch(/signed with a key that is not one of the trusted keys \(SHA256:\S+\)/);
    const behind = Number(/^virt_reconcile_revision_behind_seconds\{host="[^"]+"\} ([0-9.e+-]+)$/m.exec(await (await fetch(`${w.url}/metrics`)).text())?.[1]);
    expect(behind).toBeGreaterThan(0);

    // A restart with the head still rejected: the revision applied before is in force again.
    w.proc.kill('SIGTERM');
    expect(await w.exit()).toBe(0);
    w = await startWatch(sb, args);
    st = await until(async () => {
      const s = await w.status();
      return s.rejectedRevision?.revision === forged && s.appliedRevision && s;
    }, 'the restarted agent to reject the head and keep the last good');
    expect(st.appliedRevision).toBe(good);
    expect(await size(path.join(sb.dir, 'g.qcow2'))).toBe(8 * MiB);

    const fixed = await repo.commit('14M', by('signer'));
    await until(async () => (await w.status()).appliedRevision === fixed, 'the next signed commit to be applied');
    expect((await w.status()).rejectedRevision).toBeUndefined();
    expect(await size(path.join(sb.dir, 'g.qcow2'))).toBe(14 * MiB);
    expect(await (await fetch(`${w.url}/metrics`)).text()).toMatch(/^virt_reconcile_revision_behind_seconds\{host="[^"]+"\} 0$/m);
    w.proc.kill('SIGTERM');
    expect(await w.exit()).toBe(0);
  });

  it("GPG signatures: a commit signed by the trusted key is applied, one signed by a key in the machine's own keyring is not", { timeout: 120_000 }, async () => {
    const sb = await sandbox('git-gpg');
    boxes.push(sb);
    const repo = await repository(sb);
    const homes = { signer: path.join(sb.dir, 'gpg-signer'), other: path.join(sb.dir, 'gpg-other') };
    for (const [name, home] of Object.entries(homes)) {
      await execa('mkdir', ['-m', '700', home]);
      await execa('gpg', [
        '--homedir',
        home,
        '--batch',
        '--pinentry-mode',
        'loopback',
        '--passphrase',
        '',
        '--quick-gen-key',
        `${name} <${name}@example.com>`,
        'ed25519',
        'sign',
        'never',
      ]);
      cleanups.push(() => execa('gpgconf', ['--homedir', home, '--kill', 'all']));
    }
    await writeFile(path.join(sb.dir, 'trusted.asc'), (await execa('gpg', ['--homedir', homes.signer, '--armor', '--export', 'signer@example.com'])).stdout);
    const by = (name: 'signer' | 'other') => ({ config: [`user.signingkey=${name}@example.com`], env: { GNUPGHOME: homes[name] } });
    const good = await repo.commit('8M', by('signer'));
    // The other key is where gpg looks by default (GNUPGHOME): it must not count.
    process.env.GNUPGHOME = homes.other;
    cleanups.push(async () => delete process.env.GNUPGHOME);
    const w = await startWatch(sb, ['--git', `file://${repo.bare}`, '--verify-commits', path.join(sb.dir, 'trusted.asc'), '--interval', '2s']);
    await until(async () => (await w.status()).appliedRevision === good, 'the GPG-signed commit to be applied');
    const other = await repo.commit('10M', by('other'));
    const st = await until(async () => {
      const s = await w.status();
      return s.rejectedRevision?.revision === other && s;
    }, 'the commit signed by an untrusted GPG key to be rejected');
    expect(st.rejectedRevision.reason).toBe('signature');
    expect(st.appliedRevision).toBe(good);
    expect(await size(path.join(sb.dir, 'g.qcow2'))).toBe(8 * MiB);
    w.proc.kill('SIGTERM');
    expect(await w.exit()).toBe(0);
  });
});
