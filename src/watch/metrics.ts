// Prometheus metrics of the watch service (prom-client), served at /metrics.
import { Counter, Gauge, Histogram, Registry } from 'prom-client';
import type { DiskStats } from '../tools/domstats.js';

/** `labels`: put on every series (the host, so that a fleet's agents are told apart). */
export function createMetrics(labels: Record<string, string> = {}) {
  const registry = new Registry();
  registry.setDefaultLabels(labels);
  const m = {
    registry,
    duration: new Histogram({
      name: 'virt_reconcile_reconcile_duration_seconds',
      help: 'Duration of one reconcile (observe, plan, apply)',
      buckets: [0.1, 0.5, 1, 2, 5, 10, 30, 60, 300],
      registers: [registry],
    }),
    reconciles: new Counter({ name: 'virt_reconcile_reconciles_total', help: 'Reconciles run', registers: [registry] }),
    errors: new Counter({ name: 'virt_reconcile_reconcile_errors_total', help: 'Reconciles that failed (invalid YAML, refused changes, failed actions)', registers: [registry] }),
    drift: new Counter({
      name: 'virt_reconcile_drift_corrections_total',
      help: 'Changes applied after the first successful reconcile (drift healed)',
      labelNames: ['kind'],
      registers: [registry],
    }),
    resources: new Gauge({ name: 'virt_reconcile_resources', help: 'Declared objects by kind and state', labelNames: ['kind', 'state'], registers: [registry] }),
    poolCapacity: new Gauge({ name: 'virt_reconcile_pool_capacity_bytes', help: 'Pool capacity', labelNames: ['pool'], registers: [registry] }),
    poolAllocation: new Gauge({ name: 'virt_reconcile_pool_allocation_bytes', help: 'Pool allocation', labelNames: ['pool'], registers: [registry] }),
    poolAlert: new Gauge({
      name: 'virt_reconcile_pool_alert_ratio',
      help: "A pool's capacityAlert as a fraction of its capacity (declared pools that set one)",
      labelNames: ['pool'],
      registers: [registry],
    }),
    waiting: new Gauge({ name: 'virt_reconcile_waiting_actions', help: 'Disruptive changes held back until a maintenance window opens', registers: [registry] }),
    ready: new Gauge({ name: 'virt_reconcile_ready', help: '1 when the last reconcile applied everything with nothing refused or failed, else 0', registers: [registry] }),
    backupLastSuccess: new Gauge({
      name: 'virt_reconcile_backup_last_success_timestamp_seconds',
      help: 'Unix time of the last successful backup',
      labelNames: ['backup'],
      registers: [registry],
    }),
    backupLastFailure: new Gauge({
      name: 'virt_reconcile_backup_last_failure_timestamp_seconds',
      help: 'Unix time of the last failed backup run',
      labelNames: ['backup'],
      registers: [registry],
    }),
    backupConsecutiveFailures: new Gauge({
      name: 'virt_reconcile_backup_consecutive_failures',
      help: 'Failed runs in a row since the last successful backup',
      labelNames: ['backup'],
      registers: [registry],
    }),
    backupNextRun: new Gauge({
      name: 'virt_reconcile_backup_next_run_timestamp_seconds',
      help: 'Unix time of the next scheduled run',
      labelNames: ['backup'],
      registers: [registry],
    }),
    backupSuspended: new Gauge({
      name: 'virt_reconcile_backup_suspended',
      help: '1 while the schedule is suspended after maxFailures failed runs in a row',
      labelNames: ['backup'],
      registers: [registry],
    }),
    backupFailures: new Counter({ name: 'virt_reconcile_backup_failures_total', help: 'Backup runs that failed', labelNames: ['backup'], registers: [registry] }),
    revision: new Gauge({ name: 'virt_reconcile_applied_revision_info', help: 'The revision in force (value 1)', labelNames: ['revision'], registers: [registry] }),
    head: new Gauge({
      name: 'virt_reconcile_source_revision_info',
      help: 'The newest revision of the source (the branch head; value 1)',
      labelNames: ['revision'],
      registers: [registry],
    }),
    behind: new Gauge({
      name: 'virt_reconcile_revision_behind_seconds',
      help: 'How long the revision in force has been behind the newest revision of the source (0 when it is the newest)',
      registers: [registry],
    }),
    rejected: new Gauge({
      name: 'virt_reconcile_revision_rejected',
      help: '1 while the newest revision is rejected, by reason: invalid (the YAML) or signature (not signed by a trusted key)',
      labelNames: ['reason'],
      registers: [registry],
    }),
    signatureRejections: new Counter({
      name: 'virt_reconcile_signature_rejections_total',
      help: 'Revisions refused because their commit is not signed by a trusted key',
      registers: [registry],
    }),
    imageAllocation: new Gauge({ name: 'virt_reconcile_image_allocation_bytes', help: 'Bytes an image takes on its storage', labelNames: ['image'], registers: [registry] }),
    imageCapacity: new Gauge({ name: 'virt_reconcile_image_capacity_bytes', help: 'Virtual size of an image', labelNames: ['image'], registers: [registry] }),
  };
  return m;
}

/**
 * Per-disk I/O of the declared VMs, read at each scrape (one `virsh domstats` for all
 * domains): counters as the hypervisor counts them, and allocation against capacity.
 */
export function addDiskMetrics(registry: Registry, read: () => Promise<DiskStats[]>): void {
  const labelNames = ['vm', 'disk'];
  let last: Promise<DiskStats[]> | undefined;
  // One read per scrape, shared by every series below.
  const stats = () => {
    last ??= read()
      .catch(() => [])
      .finally(() => setTimeout(() => (last = undefined), 500));
    return last;
  };
  const counter = (name: string, help: string, field: keyof DiskStats) =>
    new Counter({
      name,
      help,
      labelNames,
      registers: [registry],
      async collect() {
        this.reset();
        for (const d of await stats()) this.inc({ vm: d.vm, disk: d.disk }, d[field] as number);
      },
    });
  const gauge = (name: string, help: string, field: 'allocation' | 'capacity') =>
    new Gauge({
      name,
      help,
      labelNames,
      registers: [registry],
      async collect() {
        this.reset();
        for (const d of await stats()) if (d[field] !== undefined) this.set({ vm: d.vm, disk: d.disk }, d[field]!);
      },
    });
  counter('virt_reconcile_disk_read_bytes_total', 'Bytes read from a VM disk (running domains)', 'readBytes');
  counter('virt_reconcile_disk_write_bytes_total', 'Bytes written to a VM disk', 'writeBytes');
  counter('virt_reconcile_disk_read_requests_total', 'Read requests to a VM disk', 'readRequests');
  counter('virt_reconcile_disk_write_requests_total', 'Write requests to a VM disk', 'writeRequests');
  counter('virt_reconcile_disk_flush_requests_total', 'Flush requests to a VM disk', 'flushRequests');
  gauge('virt_reconcile_disk_allocation_bytes', 'Bytes a VM disk takes on its storage (a qcow2 growing)', 'allocation');
  gauge('virt_reconcile_disk_capacity_bytes', 'Virtual size of a VM disk', 'capacity');
}

export type Metrics = ReturnType<typeof createMetrics>;
