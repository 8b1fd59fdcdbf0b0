// A backup job is made only when libvirt says it completed (adversarial pass: a job stopped by
// domjobabort was recorded as a good, verified backup, and later increments inherited its gap).
import { describe, expect, it } from 'vitest';
import { jobFailure } from '../../src/tools/libvirt-backup.js';

describe('backup job outcome', () => {
  it('only a completed job is a success', () => {
    expect(jobFailure('Job type:         Completed   \nOperation:        Backup      \nTime elapsed:     16           ms\n')).toBeUndefined();
    expect(jobFailure('Job type:         Cancelled   \nOperation:        Backup      \n')).toMatch(/Job type: Cancelled \/ Operation: Backup/);
    expect(jobFailure('Job type:         Failed      \nOperation:        Backup      \nError message:    No space left\n')).toMatch(/Failed.*No space left/);
    expect(jobFailure('')).toMatch(/no outcome/);
  });
});
