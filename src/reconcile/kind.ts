// The one interface every kind of managed object implements (image files, pool volumes,
// pools, domains; libvirt secrets next). Modelled on Crossplane's ExternalClient: the engine
// asks each kind what to observe, gives it the observation to diff (pure), and calls it to
// execute its own actions; the engine itself knows no kind.
import type { StatCache } from '../providers/common/stat-cache.js';
import type { ProgressSink } from '../progress/progress.js';
import type { Virsh } from '../tools/virsh.js';
import type { Inventory, InventoryRecord, ObjectKey } from './inventory.js';
import type { DesiredState } from './model.js';
import type { Observation, Targets } from '../providers/observe.js';
import type { Action, Refusal, Resource } from './plan.js';

export interface DiffInput {
  state: DesiredState;
  observed: Observation;
  inventory: Inventory;
  /** this kind's inventory records the YAML no longer declares: inventory minus desired, computed once by the engine */
  orphans: [key: string, record: InventoryRecord][];
  allowReplace: boolean;
  prune: boolean;
  /** actions of the kinds diffed before this one (a pool is pruned with the volumes pruned before it) */
  earlier: Action[];
}

export interface KindDiff {
  actions: Action[];
  refusals: Refusal[];
  notes: string[];
  /** per object: what its running instance keeps until it restarts (domains) */
  pending?: Record<string, string[]>;
}

export interface ExecContext {
  /** the libvirt connection, opened on first use */
  virsh: () => Virsh;
  cache?: StatCache;
  log: (line: string) => void;
  /** the state directory (the download cache is under it) */
  stateDir: string;
  /** where long work shows how far it is (a terminal line, periodic lines, the watch service's status) */
  progress: ProgressSink;
  /** aborted: builds in private scratch stop; short actions finish (see apply.ts) */
  signal?: AbortSignal;
  /** work to do once every action has ended (tidying that depends on other actions, e.g. empty directories) */
  atEnd: (task: () => Promise<void>) => void;
  /**
   * The inventory, each change persisted before the call returns: intent recorded before an
   * object is made (Crossplane's "create pending") survives a kill -9 in the middle.
   */
  inventory: {
    get(key: string): InventoryRecord | undefined;
    set(key: string, record: InventoryRecord): Promise<void>;
    forget(key: string): Promise<void>;
  };
}

/** What an action leaves in the inventory: a record of what it made, or a record forgotten. */
export type Effect = { record: [key: string, record: InventoryRecord] } | { forget: string } | undefined;

export interface Kind {
  readonly resource: Resource;
  /** kinds whose actions this kind's diff reads (DiffInput.earlier): they are diffed first */
  readonly diffAfter?: readonly Resource[];
  /** What to observe for this state, declared up front: observation is one batched pass per tool. */
  targets(state: DesiredState, inventory: Inventory): Partial<Targets>;
  /** The inventory keys this state declares; prune is the inventory minus the union of these. */
  declared(state: DesiredState): ObjectKey[];
  /** Pure: desired vs observed. */
  diff(input: DiffInput): KindDiff;
  /** Carries out one of this kind's actions; returns its inventory effect. */
  execute(action: Action, ctx: ExecContext): Promise<Effect>;
  /**
   * At the start of every apply (under its lock), tidies what an interrupted apply may have
   * left beside the objects this kind made (the inventory's records), whether or not any of
   * them has an action now (and what it keeps in the state directory that nothing needs any
   * more); returns a log line for each thing it removed.
   */
  tidy?(records: InventoryRecord[], stateDir: string): Promise<string[]>;
  /**
   * Actions of this kind that are cheaper together (many creates in one pool: one virsh
   * process instead of one each). Ready actions with the same key are handed over in groups
   * of at most `size`; each still gets its own outcome, and the same crash safety as alone.
   */
  readonly batch?: {
    key(action: Action): string | undefined;
    size: number;
    /** one outcome per action, in order: its effect, or the error that failed it */
    execute(actions: Action[], ctx: ExecContext): Promise<(Effect | Error)[]>;
  };
}
