// Which files a host takes: names without case, globs (picomatch, without case, negations),
// labels; and the target a run is for, checked.
import { describe, expect, it } from 'vitest';
import { appliesTo, hostTarget, selects } from '../../src/reconcile/hosts.js';

const t = (host: string, labels: Record<string, string> = {}) => ({ host, labels });

describe('host selectors', () => {
  it('names compare without case; globs too, negations included; labels exactly', () => {
    expect(selects('HV-WEB-1', t('hv-web-1'))).toBe(true);
    expect(selects('HV-WEB-*', t('hv-web-1'))).toBe(true);
    expect(selects('hv-web-[13]', t('hv-web-3'))).toBe(true);
    expect(selects('hv-web-[13]', t('hv-web-2'))).toBe(false);
    expect(selects('!hv-web-1', t('hv-db-1'))).toBe(true);
    expect(selects('!hv-web-1', t('hv-web-1'))).toBe(false);
    expect(selects('hv-{web,db}-1', t('hv-db-1'))).toBe(true);
    // A shell's negated class, not picomatch's class of "!" and "a".
    expect(selects('hv-[!a]*', t('hv-b1'))).toBe(true);
    expect(selects('hv-[!a]*', t('hv-a1'))).toBe(false);
    expect(selects({ label: 'role=db' }, t('x', { role: 'db' }))).toBe(true);
    expect(selects({ label: 'role=db' }, t('x', { role: 'dbx' }))).toBe(false);
  });
  it('a file without hosts: is for every host; with, for any selector matching', () => {
    expect(appliesTo(undefined, t('a'))).toBe(true);
    expect(appliesTo(['b', { label: 'zone=1' }], t('a', { zone: '1' }))).toBe(true);
    expect(appliesTo(['b'], t('a'))).toBe(false);
  });
  it('the target: a host name and KEY=VALUE labels, else an error naming the option', () => {
    expect(hostTarget('hv-1', ['role=db', 'zone=a'])).toEqual({ host: 'hv-1', labels: { role: 'db', zone: 'a' } });
    expect(hostTarget('bad host')).toMatchObject({ error: expect.stringMatching(/^--host must be a host name/) });
    expect(hostTarget('h', ['role'])).toMatchObject({ error: expect.stringMatching(/^--label must be KEY=VALUE/) });
    expect(hostTarget('h', ['role=a', 'role=b'])).toMatchObject({ error: expect.stringMatching(/given twice/) });
  });
});
