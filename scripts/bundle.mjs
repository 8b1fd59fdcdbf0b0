// Bundles the command line (and the benchmark and dev helpers that run it) with esbuild, after
// tsc has type-checked and emitted the sources: one file per entry plus shared chunks, so that
// starting `reconcile` does not resolve and read some 200 modules of node_modules one by one.
// Commands still load only what they use: dynamic imports become chunks of their own.
// Every chunk sits two levels below the package root (dist/chunks/), as the sources in
// src/<dir>/ and tsc's dist/<dir>/ do, so paths made from import.meta.url hold in all three.
import { rm } from 'node:fs/promises';
import { build } from 'esbuild';

const dist = new URL('../dist/', import.meta.url).pathname;
await rm(`${dist}chunks`, { recursive: true, force: true });
await build({
  entryPoints: [
    'src/cli.ts',
    'src/bench/startup.ts',
    'src/bench/images.ts',
    'src/bench/volumes.ts',
    'src/bench/watch-memory.ts',
    'src/bench/summary.ts',
    'src/dev/private-libvirtd.ts',
  ],
  outdir: dist,
  outbase: 'src',
  chunkNames: 'chunks/[name]-[hash]',
  bundle: true,
  splitting: true,
  platform: 'node',
  format: 'esm',
  target: 'node20',
  logLevel: 'warning',
  // Packages used only by `watch` or only when running from source stay in node_modules:
  // pino's transports and chokidar's optional fsevents must be resolved where they are.
  // The object storage SDKs (loaded only for copyTo) are large and declare names of their own
  // that clash with this banner's: they are loaded from node_modules as they are.
  external: ['ajv', 'ajv/*', 'pino', 'prom-client', 'chokidar', 'simple-git', '@aws-sdk/*', '@azure/*'],
  // CommonJS packages bundled into ES modules still call require() for Node's built-ins, and
  // write-file-atomic names its temporary files after __filename.
  banner: {
    js: [
      "import { createRequire as __vrCreateRequire } from 'node:module';",
      "import { fileURLToPath as __vrFileURLToPath } from 'node:url';",
      'const require = __vrCreateRequire(import.meta.url);',
      'const __filename = __vrFileURLToPath(import.meta.url);',
    ].join(' '),
  },
});
