// sftp in batch mode: the only code that runs ssh. The host key must be known (strict
// checking against known_hosts), no password or passphrase is ever asked (BatchMode).
import { run } from './exec.js';

export interface SshTarget {
  user?: string;
  host: string;
  port?: number;
  identityFile?: string;
  knownHostsFile?: string;
}

/** Runs sftp batch commands (read from stdin: nothing of them is in the process arguments). A command prefixed with "-" may fail. */
export async function sftpBatch(t: SshTarget, commands: string[]): Promise<void> {
  const args = [
    '-b',
    '-',
    '-o',
    'BatchMode=yes',
    '-o',
    'StrictHostKeyChecking=yes',
    '-o',
    'ConnectTimeout=20',
    ...(t.identityFile ? ['-o', 'IdentitiesOnly=yes', '-i', t.identityFile] : []),
    ...(t.knownHostsFile ? ['-o', `UserKnownHostsFile=${t.knownHostsFile}`] : []),
    ...(t.port ? ['-P', String(t.port)] : []),
    '--',
    `${t.user ? `${t.user}@` : ''}${t.host}`,
  ];
  await run('sftp', args, { input: `${commands.join('\n')}\n`, retries: 0 });
}
