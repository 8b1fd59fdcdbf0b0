// Changing a pool's permissions in place edits libvirt's own definition: nothing else in it goes.
import { describe, expect, it } from 'vitest';
import { parsePoolXml, withTargetPermissions } from '../../src/tools/libvirt-pool.js';

const XML = `<pool type='dir'>
  <name>theirs</name>
  <uuid>0f6c5a4e-1d2b-4c3d-9e8f-0a1b2c3d4e5f</uuid>
  <capacity unit='bytes'>0</capacity>
  <source>
  </source>
  <target>
    <path>/srv/theirs</path>
    <permissions>
      <mode>0750</mode>
      <owner>107</owner>
      <group>107</group>
      <label>system_u:object_r:virt_image_t:s0</label>
    </permissions>
  </target>
</pool>
`;

describe('pool permissions, edited in place', () => {
  it('changes only the declared field and keeps the rest (owner, group, the security label, the uuid)', () => {
    const out = withTargetPermissions(XML, { mode: 0o755 });
    const p = parsePoolXml(out);
    expect(p.uuid).toBe('0f6c5a4e-1d2b-4c3d-9e8f-0a1b2c3d4e5f');
    expect(p.definition.permissions).toEqual({ mode: 0o755, owner: 107, group: 107 });
    expect(out).toContain('<label>system_u:object_r:virt_image_t:s0</label>');
    expect(p.definition.path).toBe('/srv/theirs');
  });

  it('adds permissions to a target that had none', () => {
    const bare = XML.replace(/<permissions>[\s\S]*<\/permissions>/, '');
    expect(parsePoolXml(withTargetPermissions(bare, { owner: 0, mode: 0o711 })).definition.permissions).toEqual({ mode: 0o711, owner: 0, group: undefined });
  });
});
