import { describe, expect, it } from 'vitest';
import { checksumFor, fileNameOf, parseChecksumList } from '../../src/sources/checksums.js';

const A = 'a'.repeat(64);
const B = 'B'.repeat(64);

describe('checksum lists', () => {
  it('reads GNU lines (text and binary mode) and BSD lines, inside a PGP clear signature too', () => {
    const text = `-----BEGIN PGP SIGNED MESSAGE-----\nHash: SHA256\n\n${A}  disk.qcow2.xz\n${A} *./bin.img\nSHA256 (Fedora-Cloud.qcow2) = ${B}\nSHA512 (other) = ${'c'.repeat(128)}\n# a comment\n-----BEGIN PGP SIGNATURE-----\n`;
    expect(parseChecksumList(text)).toEqual([
      { name: 'disk.qcow2.xz', sha256: A },
      { name: 'bin.img', sha256: A },
      { name: 'Fedora-Cloud.qcow2', sha256: B.toLowerCase() },
    ]);
  });

  it('finds the file a URL names (decoded, by its last segment), and says when it is missing or listed twice differently', () => {
    expect(checksumFor(`${A}  images/my disk.raw\n`, 'https://h/x/my%20disk.raw?sig=1')).toEqual({ sha256: A });
    expect(checksumFor(`${A}  other.raw\n`, 'https://h/disk.raw')).toEqual({ error: 'lists no SHA-256 for disk.raw' });
    expect(checksumFor(`${A}  disk.raw\n${B}  disk.raw\n`, 'https://h/disk.raw')).toEqual({ error: 'lists 2 different SHA-256 digests for disk.raw' });
    expect(checksumFor(`${A}  disk.raw\n${A} *disk.raw\n`, 'https://h/disk.raw')).toEqual({ sha256: A });
    expect(fileNameOf('https://h/a/b/')).toBe('b');
  });
});
