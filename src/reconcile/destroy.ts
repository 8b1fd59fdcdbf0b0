// `reconcile destroy`: plan the desired state "nothing is declared" with prune. It deletes what
// prune would delete if every object had left the YAML — what reconcile created and recorded in
// the state directory's inventory, with prune's guards (still the very file or volume it made;
// never an adopted object, never a base under a declared overlay) — and nothing else.
import type { DesiredState } from './model.js';

/**
 * The state with no object declared, keeping what says where the inventory's objects live (the
 * files' libvirt connection). Spelled out field by field rather than spread: a kind added to
 * DesiredState must fail to compile here, not be silently kept declared (and so not destroyed).
 */
export function nothingDeclared(state: DesiredState): DesiredState {
  return { connection: state.connection, files: state.files, pools: {}, images: {}, vms: {}, backups: {} };
}
