// Bundles the two executables with esbuild: dist/hfk.mjs (the CLI) and
// dist/hfk-init.mjs (the initramfs init, dry run and block reader daemon).
// Run with: node src/build.ts  (npm run build)

import { chmodSync, readFileSync } from 'node:fs';
import { build } from 'esbuild';

const pkg = JSON.parse(readFileSync(new URL('../package.json', import.meta.url), 'utf8')) as { version: string };
const entries: Record<string, string> = { hfk: 'src/cli/hfk.ts', 'hfk-init': 'src/init/main.ts' };

// The publisher's worker threads run this on its own: a small CommonJS
// script embedded in the bundles as a string (see src/publish/worker.ts).
const publishWorker = await build({
  entryPoints: ['src/publish/worker.ts'],
  bundle: true,
  platform: 'node',
  format: 'cjs',
  target: 'node24',
  write: false,
  legalComments: 'none',
  logLevel: 'warning',
  logOverride: { 'empty-import-meta': 'silent' }, // only the main thread's half uses import.meta
});

await build({
  entryPoints: entries,
  outdir: 'dist',
  outExtension: { '.js': '.mjs' },
  bundle: true,
  platform: 'node',
  format: 'esm',
  target: 'node24',
  sourcemap: 'linked',
  legalComments: 'none',
  logLevel: 'warning',
  define: { HFK_VERSION: JSON.stringify(pkg.version), HFK_PUBLISH_WORKER: JSON.stringify(publishWorker.outputFiles[0]!.text) },
  // Some dependencies are CommonJS and call require(); give ESM a require.
  banner: {
    js: [
      "import { createRequire as __hfkCreateRequire } from 'node:module'; const require = __hfkCreateRequire(import.meta.url);",
      // Fail clearly on an old runtime, before any module code runs.
      "if (Number(process.versions.node.split('.')[0]) < 24) { process.stderr.write('hfk needs Node.js 24 or newer; this is ' + process.version + '. Use the one npm ci installed: node_modules/.bin/node\\n'); process.exit(1); }",
    ].join('\n'),
  },
});

for (const name of Object.keys(entries)) chmodSync(`dist/${name}.mjs`, 0o755);
