// The status page at `/`: what a person checks at a glance. Plain HTML, no scripts; it
// reloads itself every 15 seconds.
import { formatSize } from '../reconcile/sizes.js';
import type { WatchStatus } from './service.js';

const h = (s: unknown) =>
  String(s ?? '')
    .replace(/&/g, '&amp;')
    .replace(/</g, '&lt;')
    .replace(/>/g, '&gt;')
    .replace(/"/g, '&quot;');
const size = (n?: number) => (n === undefined ? '–' : formatSize(n).replace(/ \(.*\)$/, ''));
const badge = (s: string) =>
  `<span class="badge ${/^(in-sync|ok|yes|ready|active)$/.test(s) ? 'ok' : /refused|failed|error|absent|missing|not ready|unknown/.test(s) ? 'bad' : 'warn'}">${h(s)}</span>`;

export function renderStatusPage(s: WatchStatus): string {
  const last = s.lastReconcile;
  const pools = s.pools
    .map((p) => {
      const pct = p.usedPercent ?? 0;
      const bar = `<div class="bar"><div class="fill ${p.overAlert ? 'over' : ''}" style="width:${Math.min(100, pct)}%"></div>${p.capacityAlert !== undefined ? `<div class="alert" style="left:${p.capacityAlert}%"></div>` : ''}</div>`;
      return `<tr><td>${h(p.name)}</td><td>${h(p.type)}</td><td>${badge(p.exists ? (p.active ? 'active' : 'inactive') : 'absent')}</td><td class="usage">${bar}<small>${p.usedPercent ?? '–'}% of ${size(p.capacity)}, ${size(p.available)} free${p.overAlert ? ' — over alert' : ''}</small></td><td>${badge(p.status)}</td></tr>`;
    })
    .join('');
  const images = s.images
    .map(
      (i) =>
        `<tr><td>${h(i.name)}</td><td><code>${h(i.where)}</code></td><td>${h(i.format ?? '–')}</td><td>${size(i.virtualSize)}</td><td>${size(i.allocated)}</td><td>${badge(i.status)}</td></tr>`,
    )
    .join('');
  const vms = s.vms
    .map(
      (v) =>
        `<tr><td>${h(v.name)}</td><td>${h(v.state)}</td><td>${v.disks.map((d) => `${h(d.target)} <small>${h(d.cache ?? 'default')}/${h(d.io ?? 'default')}</small>`).join('<br>')}</td><td>${badge(v.status)}${v.pendingRestart.length ? `<br><small>${h(v.pendingRestart.join(', '))}</small>` : ''}</td></tr>`,
    )
    .join('');
  const backups = s.backups
    .map(
      (b) =>
        `<tr><td>${h(b.name)}</td><td>${h(b.vm)}</td><td><code>${h(b.schedule)}</code></td><td>${h(b.lastSuccess ?? 'never')}</td><td>${b.lastFailure ? `<span class="badge bad">${h(b.lastFailure.at)}</span> <small>${h(b.lastFailure.error)}</small>` : '–'}</td><td>${b.consecutiveFailures}</td><td>${b.suspended ? `<span class="badge bad">suspended</span> <small>since ${h(b.suspended.at)}</small>` : h(b.nextRun ?? '–')}</td></tr>`,
    )
    .join('');
  const operations = (s.operations ?? []).map((o) => `<tr><td>${h(o.id)}</td><td>${h(o.what)}</td><td>${h(o.progress)}</td><td>${o.elapsedSeconds}s</td></tr>`).join('');
  const section = (title: string, head: string[], rows: string) => (rows ? `<h2>${title}</h2><table><tr>${head.map((x) => `<th>${x}</th>`).join('')}</tr>${rows}</table>` : '');
  return `<!doctype html><html><head><meta charset="utf-8"><meta http-equiv="refresh" content="15"><title>virt-reconcile</title>
<style>
body{font:14px/1.4 system-ui,sans-serif;margin:24px;color:#1d2330;background:#f6f7f9}
h1{font-size:20px;margin:0 0 12px} h2{font-size:16px;margin:24px 0 8px}
.summary{display:flex;gap:12px;flex-wrap:wrap}.card{background:#fff;border:1px solid #dde1e7;border-radius:6px;padding:10px 14px;min-width:160px}
.card b{display:block;font-size:12px;color:#5b6472;font-weight:600;text-transform:uppercase}
table{border-collapse:collapse;background:#fff;width:100%;border:1px solid #dde1e7}
th,td{text-align:left;padding:6px 10px;border-bottom:1px solid #eef0f3;vertical-align:top}th{background:#eef0f3;font-size:12px}
.badge{padding:1px 8px;border-radius:10px;font-size:12px;background:#fff3cd}.ok{background:#d4f4dd}.bad{background:#f8d7da}
.usage{min-width:260px}.bar{position:relative;height:10px;background:#e7eaee;border-radius:5px;margin-bottom:3px}
.fill{height:100%;background:#3b82f6;border-radius:5px}.fill.over{background:#dc2626}.alert{position:absolute;top:-3px;width:2px;height:16px;background:#111}
pre{white-space:pre-wrap;background:#fff;border:1px solid #dde1e7;padding:8px}
</style></head><body>
<h1>virt-reconcile ${badge(s.suspended ? 'suspended' : s.ready ? 'ready' : 'not ready')}</h1>
${!s.ready && s.notReadyReason ? `<p class="reason">${h(s.notReadyReason)}</p>` : ''}
<div class="summary">
<div class="card"><b>Revision in force</b>${h(s.appliedRevision ?? 'none yet')}</div>
<div class="card"><b>Last reconcile</b>${last ? `${h(last.at)} ${badge(last.ok ? 'ok' : 'failed')}<br><small>${h(last.summary)} in ${last.durationSeconds.toFixed(1)}s</small>` : 'not yet'}</div>
<div class="card"><b>Last observed</b>${h(s.lastObservedAt ?? 'never')}</div>
<div class="card"><b>Drift corrected</b>${s.driftCorrections}</div>
<div class="card"><b>Next reconcile</b>${h(s.nextReconcileAt ?? '–')}</div>
<div class="card"><b>Source</b>${h(s.source)}</div>
</div>
${s.rejectedRevision ? `<h2>Rejected revision</h2><pre>${h(s.rejectedRevision.revision)}: ${h(s.rejectedRevision.error)}</pre>` : ''}
${last && !last.ok ? `<h2>Last error</h2><pre>${h(last.error)}</pre>` : ''}
${section('Under way', ['Object', 'Doing', 'Progress', 'Elapsed'], operations)}
${section('Pools', ['Pool', 'Type', 'State', 'Usage', 'Status'], pools)}
${section('Images', ['Image', 'Where', 'Format', 'Size', 'Allocated', 'Status'], images)}
${section('VMs', ['VM', 'State', 'Disks (cache/io)', 'Status'], vms)}
${section('Backups', ['Schedule', 'VM', 'Cron', 'Last success', 'Last failure', 'Failures in a row', 'Next run'], backups)}
${s.notes.length ? `<h2>Notes</h2><pre>${h(s.notes.join('\n'))}</pre>` : ''}
</body></html>`;
}
