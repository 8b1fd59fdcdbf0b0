// virsh's error output: what makes a batch fail, and what a user reads.
import { describe, expect, it } from 'vitest';
import { libvirtMessage, unexpectedErrors } from '../../src/tools/virsh.js';

const POLKIT = 'Authorization not available. Check if polkit service is running or see debug message for more information.';

describe('virsh error output', () => {
  it.each([
    { reason: 'a polkit warning (virsh on a terminal without polkitd) is not a failure', stderr: `${POLKIT}\n`, want: [] },
    {
      reason: 'an absent pool is an answer, not a failure',
      stderr: "error: failed to get pool 'x'\nerror: Storage pool not found: no storage pool with matching name 'x'\n",
      want: [],
    },
    { reason: 'any other error line fails the batch', stderr: `${POLKIT}\nerror: internal error: something broke\n`, want: ['error: internal error: something broke'] },
  ])('$reason', ({ stderr, want }) => expect(unexpectedErrors(stderr)).toEqual(want));

  it('a command failure reads as libvirt said it, without the warning', () => {
    expect(libvirtMessage({ stderr: `${POLKIT}\nerror: Failed to start pool p\nerror: cannot open directory '/x': No such file or directory\n` })).toBe(
      "cannot open directory '/x': No such file or directory",
    );
  });
});
