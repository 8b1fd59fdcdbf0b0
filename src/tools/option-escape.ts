// qemu's and virsh's option strings separate key=value pairs with commas; a comma inside a
// value (a path such as "/keys/p,format=base64") must be doubled, or it starts a new option.
export function optionValue(v: string): string {
  return v.replace(/,/g, ',,');
}
