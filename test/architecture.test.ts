// The architecture, checked: the import graph of src/ (every .ts file but
// the tests and src/build.ts, which only bundles) has no cycle, no folder
// imports a folder of a higher layer, and no file grows past MAX_LINES.
// Imports are read from the source text: `import … from`, `export … from`,
// `import '…'` and `import('…')` with a literal, type-only ones included (a
// type is a dependency too); only relative specifiers name files of src/.

import { readdirSync, readFileSync } from 'node:fs';
import { dirname, join, relative, resolve } from 'node:path';
import { describe, expect, it } from 'vitest';

const SRC = new URL('../src/', import.meta.url).pathname;

/**
 * The layers, lowest first: a file may import its own layer and the ones
 * below it. A folder of src/ is named by its name, a file at the top of
 * src/ by its file name.
 *
 * - config sits above reader and publish and below init and mkinitrd: the
 *   host CLI, mkinitrd and the init all read hfk.yaml and the kernel command
 *   line, and config's value schemas use the store's URL rules
 *   (store/http.ts normalizeBaseUrl) and the image names of format.
 * - init and mkinitrd share a layer: mkinitrd bakes what the init reads, but
 *   neither imports the other.
 */
export const LAYERS: readonly (readonly string[])[] = [
  ['errors.ts', 'util'],
  ['format'],
  ['store'],
  ['source'],
  ['fetch'],
  ['fuse', 'blockfs', 'cloop'],
  ['reader', 'publish'],
  ['config'],
  ['init', 'mkinitrd'],
  ['cli'],
];

/** Files of src/ the graph leaves out: the build and package scripts are tools, not part of a program. */
const OUTSIDE = new Set(['build.ts', 'package.ts']);

export const MAX_LINES = 600;
/** Files allowed past MAX_LINES: the FUSE protocol's opcode table and codecs are one unit. */
const LONG_FILES = new Set(['fuse/protocol.ts']);

// ---------------------------------------------------------------------------
// Reading imports

/**
 * The source with comments, template literals and regular expression
 * literals blanked out (replaced by spaces, newlines kept), so that only
 * real code and plain string literals remain for the import patterns.
 */
export function codeOnly(text: string): string {
  const out: string[] = [];
  const blank = (s: string) => s.replace(/[^\n]/g, ' ');
  let i = 0;
  let last = ''; // the last significant character of code, to tell a regex from a division
  let lastWord = '';
  const templateDepth: number[] = []; // brace depth at each open `${`
  let braces = 0;
  while (i < text.length) {
    const c = text[i]!;
    const next = text[i + 1];
    if (c === '/' && next === '/') {
      const end = text.indexOf('\n', i);
      const stop = end < 0 ? text.length : end;
      out.push(blank(text.slice(i, stop)));
      i = stop;
      continue;
    }
    if (c === '/' && next === '*') {
      const end = text.indexOf('*/', i + 2);
      const stop = end < 0 ? text.length : end + 2;
      out.push(blank(text.slice(i, stop)));
      i = stop;
      continue;
    }
    if (c === "'" || c === '"') {
      let j = i + 1;
      while (j < text.length && text[j] !== c && text[j] !== '\n') j += text[j] === '\\' ? 2 : 1;
      out.push(text.slice(i, j + 1));
      i = j + 1;
      last = c;
      continue;
    }
    if (c === '`' || (c === '}' && templateDepth.length && templateDepth.at(-1) === braces)) {
      // a template literal, or its continuation after `${…}`: blank up to the end or the next `${`
      if (c === '}') templateDepth.pop();
      let j = i + 1;
      while (j < text.length && text[j] !== '`' && !(text[j] === '$' && text[j + 1] === '{')) j += text[j] === '\\' ? 2 : 1;
      if (text[j] === '$') {
        templateDepth.push(braces);
        out.push(blank(text.slice(i, j + 2)));
        i = j + 2;
      } else {
        out.push(blank(text.slice(i, j + 1)));
        i = j + 1;
        last = '`';
      }
      continue;
    }
    const regexCanStart = last === '' || /[(,=:[!&|?{};+\-*%<>~^]/.test(last) || /^(?:return|typeof|case|do|else|in|of|void|yield|await|throw|delete|new)$/.test(lastWord);
    if (c === '/' && regexCanStart) {
      let j = i + 1;
      let inClass = false;
      while (j < text.length && text[j] !== '\n') {
        if (text[j] === '\\') j += 2;
        else if (text[j] === '[') (inClass = true), j++;
        else if (text[j] === ']') (inClass = false), j++;
        else if (text[j] === '/' && !inClass) break;
        else j++;
      }
      out.push(blank(text.slice(i, j + 1)));
      i = j + 1;
      last = '/';
      lastWord = '';
      continue;
    }
    if (c === '{') braces++;
    if (c === '}') braces--;
    if (/\s/.test(c)) {
      out.push(c);
      i++;
      continue;
    }
    if (/[\w$]/.test(c)) {
      let j = i;
      while (j < text.length && /[\w$]/.test(text[j]!)) j++;
      lastWord = text.slice(i, j);
      last = 'a';
      out.push(lastWord);
      i = j;
      continue;
    }
    out.push(c);
    last = c;
    lastWord = '';
    i++;
  }
  return out.join('');
}

const STATIC = /(?:^|[;\n}])\s*(?:import|export)\b[^;'"`]*?\bfrom\s*(['"])([^'"\n]+)\1/g;
const BARE = /(?:^|[;\n}])\s*import\s*(['"])([^'"\n]+)\1/g;
const DYNAMIC = /\bimport\s*\(\s*(['"])([^'"\n]+)\1\s*\)/g;

/** The module specifiers a TypeScript source imports or re-exports, in order of appearance, each once. */
export function importSpecifiers(text: string): string[] {
  const code = codeOnly(text);
  const found: [number, string][] = [];
  for (const re of [STATIC, BARE, DYNAMIC]) for (const m of code.matchAll(re)) found.push([m.index, m[2]!]);
  return [...new Set(found.sort((a, b) => a[0] - b[0]).map(([, s]) => s))];
}

// ---------------------------------------------------------------------------
// The graph

function sourceFiles(dir: string): string[] {
  const out: string[] = [];
  for (const e of readdirSync(dir, { withFileTypes: true })) {
    const p = join(dir, e.name);
    if (e.isDirectory()) {
      if (e.name !== 'testdata') out.push(...sourceFiles(p));
    } else if (e.name.endsWith('.ts') && !e.name.endsWith('.test.ts')) {
      out.push(relative(SRC, p));
    }
  }
  return out.sort();
}

interface Graph {
  files: string[];
  /** file → the files of src/ it imports (paths relative to src/). */
  edges: Map<string, string[]>;
  /** Relative imports that name no file of the graph: "from.ts: './x.ts'". */
  unresolved: string[];
}

function buildGraph(): Graph {
  const files = sourceFiles(SRC).filter((f) => !OUTSIDE.has(f));
  const known = new Set(files);
  const edges = new Map<string, string[]>();
  const unresolved: string[] = [];
  for (const f of files) {
    const targets: string[] = [];
    for (const spec of importSpecifiers(readFileSync(join(SRC, f), 'utf8'))) {
      if (!spec.startsWith('./') && !spec.startsWith('../')) continue; // node:, packages
      const target = relative(SRC, resolve(SRC, dirname(f), spec));
      if (known.has(target)) targets.push(target);
      else unresolved.push(`${f}: '${spec}'`);
    }
    edges.set(f, targets);
  }
  return { files, edges, unresolved };
}

/** Every cycle's files, one cycle per strongly connected component (Tarjan), each as a → b → … → a. */
export function findCycles(edges: ReadonlyMap<string, readonly string[]>): string[][] {
  let counter = 0;
  const index = new Map<string, number>();
  const low = new Map<string, number>();
  const stack: string[] = [];
  const onStack = new Set<string>();
  const components: string[][] = [];
  const connect = (v: string): void => {
    index.set(v, counter);
    low.set(v, counter++);
    stack.push(v);
    onStack.add(v);
    for (const w of edges.get(v) ?? []) {
      if (!index.has(w)) {
        connect(w);
        low.set(v, Math.min(low.get(v)!, low.get(w)!));
      } else if (onStack.has(w)) {
        low.set(v, Math.min(low.get(v)!, index.get(w)!));
      }
    }
    if (low.get(v) === index.get(v)) {
      const c: string[] = [];
      let w: string;
      do {
        w = stack.pop()!;
        onStack.delete(w);
        c.push(w);
      } while (w !== v);
      if (c.length > 1 || (edges.get(v) ?? []).includes(v)) components.push(c);
    }
  };
  for (const v of [...edges.keys()].sort()) if (!index.has(v)) connect(v);
  // One concrete cycle through each component: a shortest path back to its first file.
  return components.map((c) => {
    const inside = new Set(c);
    const start = [...c].sort()[0]!;
    const prev = new Map<string, string>();
    const queue = [start];
    for (let k = 0; k < queue.length; k++) {
      const v = queue[k]!;
      for (const w of edges.get(v) ?? []) {
        if (!inside.has(w)) continue;
        if (w === start) {
          const path = [v];
          while (path[0] !== start) path.unshift(prev.get(path[0]!)!);
          return [...path, start];
        }
        if (!prev.has(w)) {
          prev.set(w, v);
          queue.push(w);
        }
      }
    }
    return [start, start];
  });
}

/** The layer of a file of src/ (its top folder, or its own name at the top), or undefined. */
export function layerOf(file: string, layers: readonly (readonly string[])[] = LAYERS): number | undefined {
  const top = file.split('/')[0]!;
  const i = layers.findIndex((names) => names.includes(top));
  return i < 0 ? undefined : i;
}

function lineCount(text: string): number {
  if (text === '') return 0;
  return text.split('\n').length - (text.endsWith('\n') ? 1 : 0);
}

// ---------------------------------------------------------------------------
// The checks

describe('reading imports', () => {
  it('finds static, re-exported, bare and dynamic imports, type-only ones too, each once', () => {
    const text = [
      "import * as fs from 'node:fs';",
      "import type { A } from './a.ts';",
      'import {',
      '  type B,',
      '  c,',
      "} from '../b.ts';",
      "export { d } from './d.ts';",
      "export type * from './e.ts';",
      "import './side.ts';",
      "const m = await import('./lazy.ts');",
      "const again = await import('./a.ts');",
    ].join('\n');
    expect(importSpecifiers(text)).toEqual(['node:fs', './a.ts', '../b.ts', './d.ts', './e.ts', './side.ts', './lazy.ts']);
  });

  it('ignores imports in comments, template literals and regular expressions', () => {
    const text = [
      "// import { x } from './comment.ts';",
      "/* import('./block.ts') */",
      "/** e.g. export { y } from './doc.ts'; */",
      "const script = `import { z } from './template.ts'; await import('/${name}');`;",
      "const nested = `${`import('./inner.ts')`}`;",
      "const re = /import '(\\.\\/regex\\.ts)'/;",
      'const ratio = a / b; // not a regex',
      "import { real } from './real.ts';",
    ].join('\n');
    expect(importSpecifiers(text)).toEqual(['./real.ts']);
  });

  it('keeps line breaks where it blanks, so positions stay on their lines', () => {
    const text = "/* a\nb */ x;\nconst t = `1\n2`;\n";
    expect(codeOnly(text).split('\n').length).toBe(text.split('\n').length);
  });
});

describe('the helpers of this test', () => {
  it('finds each cycle once, as a closed path', () => {
    const g = new Map<string, string[]>([
      ['a', ['b']],
      ['b', ['c']],
      ['c', ['a', 'd']],
      ['d', []],
      ['e', ['e']],
      ['f', ['a']],
    ]);
    expect(findCycles(g)).toEqual([['a', 'b', 'c', 'a'], ['e', 'e']]);
    expect(findCycles(new Map([['a', ['b']], ['b', []]]))).toEqual([]);
  });

  it('puts a file in the layer of its top folder, or of its own name at the top of src/', () => {
    expect(layerOf('errors.ts')).toBe(0);
    expect(layerOf('util/size.ts')).toBe(0);
    expect(layerOf('cli/commands/get.ts')).toBe(LAYERS.length - 1);
    expect(layerOf('nowhere/x.ts')).toBeUndefined();
  });
});

describe('the architecture of src/', () => {
  const graph = buildGraph();

  it('reads a graph of the whole of src/, every relative import naming one of its files', () => {
    expect(graph.files.length).toBeGreaterThan(50);
    expect(graph.unresolved, 'relative imports that name no source file of src/').toEqual([]);
  });

  it('has no import cycle', () => {
    const cycles = findCycles(graph.edges).map((c) => c.join(' → '));
    expect(cycles, `import cycles:\n${cycles.join('\n')}`).toEqual([]);
  });

  it('puts every file in a layer', () => {
    const lost = graph.files.filter((f) => layerOf(f) === undefined);
    expect(lost, 'files of src/ in no layer: add their folder to LAYERS').toEqual([]);
  });

  it('has no file import a folder of a higher layer', () => {
    const upward: string[] = [];
    for (const [from, targets] of graph.edges) {
      const mine = layerOf(from);
      if (mine === undefined) continue;
      for (const to of targets) {
        const theirs = layerOf(to);
        if (theirs !== undefined && theirs > mine) upward.push(`${from} → ${to} (layer ${mine}: ${LAYERS[mine]!.join(', ')} → layer ${theirs}: ${LAYERS[theirs]!.join(', ')})`);
      }
    }
    expect(upward, `imports of a higher layer:\n${upward.join('\n')}`).toEqual([]);
  });

  it(`has no source file over ${MAX_LINES} lines (tests aside), but for ${[...LONG_FILES].join(', ')}`, () => {
    const long = sourceFiles(SRC)
      .filter((f) => !LONG_FILES.has(f))
      .map((f) => ({ f, lines: lineCount(readFileSync(join(SRC, f), 'utf8')) }))
      .filter(({ lines }) => lines > MAX_LINES)
      .map(({ f, lines }) => `${f}: ${lines} lines`);
    expect(long, `files over ${MAX_LINES} lines:\n${long.join('\n')}`).toEqual([]);
  });
});
