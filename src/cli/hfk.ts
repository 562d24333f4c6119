#!/usr/bin/env node
// Entry point of the hfk bundle (dist/hfk.mjs).
import { isMainThread } from 'node:worker_threads';
import { main } from './main.ts';

// Worker threads load this same bundle to run their own role; only the main
// thread is the command line.
if (isMainThread) main(process.argv.slice(2)).then(
  (code) => {
    process.exitCode = code;
  },
  (e: unknown) => {
    process.stderr.write(`hfk: internal error: ${e instanceof Error ? e.stack : String(e)}\n`);
    process.exitCode = 70;
  },
);
