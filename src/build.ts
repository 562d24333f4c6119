// Bundles the two executables with esbuild: dist/hfk.mjs (the CLI) and
// dist/hfk-init.mjs (the initramfs init, dry run and block reader daemon).
// Run with: node src/build.ts  (npm run build)

import { chmodSync, readFileSync } from 'node:fs';
import { build } from 'esbuild';
import { WORKER_MODULES } from './util/worker.ts';

const pkg = JSON.parse(readFileSync(new URL('../package.json', import.meta.url), 'utf8')) as { version: string };
const entries: Record<string, string> = { hfk: 'src/cli/hfk.ts', 'hfk-init': 'src/init/main.ts' };

// Worker threads run one module each; every such module is bundled on its
// own as a small CommonJS script that the bundles embed (src/util/worker.ts).
const workerScripts: Record<string, string> = {};
for (const [name, entry] of Object.entries(WORKER_MODULES)) {
  const r = await build({
    entryPoints: [entry],
    bundle: true,
    platform: 'node',
    format: 'cjs',
    target: 'node24',
    write: false,
    legalComments: 'none',
    logLevel: 'warning',
    logOverride: { 'empty-import-meta': 'silent' }, // only the starting side uses import.meta
  });
  workerScripts[name] = r.outputFiles[0]!.text;
}

// The init's bundle is minified (names kept, for stack traces; the source
// map stays in dist/): the initramfs's Node reads, hashes and compiles the
// whole file at every start, twice per boot (the init and its reader), and
// on a slow machine that is most of its start (figures:
// docs/PERFORMANCE.md). The CLI stays readable.
for (const [name, entry] of Object.entries(entries)) {
  await build({
    entryPoints: { [name]: entry },
    ...(name === 'hfk-init' ? { minify: true, keepNames: true } : {}),
    outdir: 'dist',
    outExtension: { '.js': '.mjs' },
    bundle: true,
    platform: 'node',
    format: 'esm',
    target: 'node24',
    sourcemap: 'linked',
    legalComments: 'none',
    logLevel: 'warning',
    define: { HFK_VERSION: JSON.stringify(pkg.version), HFK_WORKER_SCRIPTS: JSON.stringify(workerScripts) },
    // Some dependencies are CommonJS and call require(); give ESM a require.
    banner: {
      js: [
        "import { createRequire as __hfkCreateRequire } from 'node:module'; const require = __hfkCreateRequire(import.meta.url);",
        // Fail clearly on an old runtime, before any module code runs.
        "if (Number(process.versions.node.split('.')[0]) < 24) { process.stderr.write('hfk needs Node.js 24 or newer; this is ' + process.version + '. Use the one npm ci installed: node_modules/.bin/node\\n'); process.exit(1); }",
      ].join('\n'),
    },
  });
}

for (const name of Object.keys(entries)) chmodSync(`dist/${name}.mjs`, 0o755);
