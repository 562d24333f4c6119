// Worker threads that run one module of hfk. In the esbuild bundles each such
// module is also built on its own, as a small script the bundle embeds
// (src/build.ts), so a thread does not load and compile all of hfk again (a
// quarter second of CPU a thread on a host, seconds in an emulated guest).
// From source (vitest) the thread runs the module file itself; Node strips
// the types.

import { Worker } from 'node:worker_threads';

/** The modules that run as worker threads, by name. */
export const WORKER_MODULES = {
  publish: 'src/publish/worker.ts',
  verify: 'src/fetch/verify-worker.ts',
} as const;

export type WorkerName = keyof typeof WORKER_MODULES;

/** Set by the build: each worker module bundled alone, as CommonJS source. */
declare const HFK_WORKER_SCRIPTS: Record<WorkerName, string> | undefined;

/** Starts a thread running worker module `name`; `source` is that module's URL (used when not bundled). */
export function startWorker(name: WorkerName, source: URL, workerData: unknown): Worker {
  const script = typeof HFK_WORKER_SCRIPTS === 'object' ? HFK_WORKER_SCRIPTS[name] : undefined;
  // execArgv: whatever flags this process has (e.g. --input-type=module), the worker gets none.
  if (script) return new Worker(script, { eval: true, workerData, execArgv: [] });
  return new Worker(source, { workerData, execArgv: [] });
}
