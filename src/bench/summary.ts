// The end of `npm run bench`: one table of every goal with what this run measured (the parts
// wrote their rows to VIRT_RECONCILE_BENCH_SUMMARY), as the README shows it.
import { readFileSync } from 'node:fs';
import type { SummaryRow } from './measure.js';

const file = process.env.VIRT_RECONCILE_BENCH_SUMMARY;
if (!file) {
  console.error('summary.js prints the rows the other parts wrote to VIRT_RECONCILE_BENCH_SUMMARY; `npm run bench` sets it and runs them all');
  process.exit(2);
}
const rows = readFileSync(file, 'utf8')
  .split('\n')
  .filter(Boolean)
  .map((l) => JSON.parse(l) as SummaryRow);
const cells = rows.map((r) => [r.what, r.value, r.against ?? '', r.ratio ?? '', r.goal, r.met === undefined ? '' : r.met ? 'yes' : 'NO']);
const head = ['measure', 'reconcile', 'compared with', 'ratio', 'goal', 'met'];
console.log('\nsummary (one run)\n');
console.log(`| ${head.join(' | ')} |`);
console.log(`|${head.map(() => '---').join('|')}|`);
for (const c of cells) console.log(`| ${c.join(' | ')} |`);
const missed = rows.filter((r) => r.met === false).length;
console.log(missed ? `\n${missed} goal(s) not met in this run` : '\nevery goal met in this run');
