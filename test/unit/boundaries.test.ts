// The layout's rules, checked on the source: tool wrappers are the only code that spawns
// processes or knows a tool's command line; the engine knows no kind.
import { readdirSync, readFileSync } from 'node:fs';
import path from 'node:path';
import { describe, expect, it } from 'vitest';

const SRC = path.resolve(import.meta.dirname, '../../src');
const files = (readdirSync(SRC, { recursive: true }) as string[]).filter((f) => f.endsWith('.ts')).map((f) => f.split(path.sep).join('/'));
const text = (f: string) => readFileSync(path.join(SRC, f), 'utf8');
// Development tools, not part of reconcile: the test daemon and the benchmark run processes of their own.
const outsideProduct = (f: string) => f.startsWith('dev/') || f.startsWith('bench/');
const isTool = (f: string) => f.startsWith('tools/');

describe('layout rules', () => {
  it('only src/tools spawns processes', () => {
    const spawning = /from ['"](?:node:)?child_process['"]|from ['"]execa['"]|from ['"]simple-git['"]|\bprocess\.binding\(/;
    const offenders = files.filter((f) => !isTool(f) && !outsideProduct(f) && spawning.test(text(f)));
    expect(offenders, 'spawn through a wrapper in src/tools').toEqual([]);
  });

  it('only src/tools runs commands through exec.run or writes a virsh command line', () => {
    const runImport = /import\s*\{[^}]*\brun\b[^}]*\}\s*from\s*['"][./]*tools\/exec\.js['"]/;
    // A command line written out: virsh's or qemu-img's subcommands as the first word of an argv array.
    const virshArgv =
      /\.(exec|batch|sequence)\(\s*\[\s*\[?\s*['"]|\[\s*['"](dumpxml|list|domuuid|domcapabilities|capabilities|domstate|define|undefine|attach-device|detach-device|update-device|pool-[a-z-]+|vol-[a-z-]+|secret-[a-z-]+|snapshot-[a-z-]+|domblk[a-z]*|backup-begin|domjobinfo|domfs[a-z]+|info|convert|compare|resize|check|commit|rebase|amend|measure)['"]\s*,/;
    const offenders = files.filter((f) => !isTool(f) && !outsideProduct(f) && (runImport.test(text(f)) || virshArgv.test(text(f))));
    expect(offenders, 'add a function to the tool wrapper instead').toEqual([]);
  });

  it('the generic engine (plan, apply) names no kind: kinds come from the registry', () => {
    for (const f of ['reconcile/apply.ts', 'reconcile/engine.ts', 'reconcile/kind.ts']) {
      const t = text(f);
      expect(t, f).not.toMatch(/from ['"][./]*providers\/(image|pool|volume|domain)\/(?!interrupted|files\.js['"];\s*$)/m);
      expect(t, f).not.toMatch(/case ['"](image|pool|volume|domain)\./);
    }
    expect(text('reconcile/apply.ts')).not.toMatch(/providers\/(image|pool|volume|domain)\//);
  });

  it('every registered kind has its folder with a pure diff, an execute and an index', () => {
    const registry = text('providers/registry.ts');
    const kinds = [...registry.matchAll(/from '\.\/([a-z-]+)\/index\.js'/g)].map((m) => m[1]!);
    expect(kinds.length).toBeGreaterThanOrEqual(4);
    for (const k of kinds) {
      for (const f of ['index.ts', 'diff.ts', 'execute.ts', 'ops.ts']) expect(files, `${k}/${f}`).toContain(`providers/${k}/${f}`);
      // A diff is pure: no I/O module, no tool wrapper that runs anything.
      const diff = text(`providers/${k}/diff.ts`);
      expect(diff, `${k}/diff.ts`).not.toMatch(/from ['"]node:(fs|child_process)|fs\/promises|tools\/(exec|virsh|qemu-img)\.js/);
    }
  });
});
