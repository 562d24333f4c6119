// Worker threads that run one module of hfk. In the esbuild bundles each such
// module is also built on its own, as a small script the bundle embeds
// (src/build.ts), so a thread does not load and compile all of hfk again,
// which is costly even on a host and far more so in an emulated guest
// (figures: docs/PERFORMANCE.md).
// From source (vitest) the thread runs the module file itself; Node strips
// the types. WorkerPool hands jobs to a set of such threads.

import { type TransferListItem, Worker } from 'node:worker_threads';
import { HfkError, UsageError } from '../errors.ts';

/** The modules that run as worker threads, by name. */
export const WORKER_MODULES = {
  publish: 'src/publish/worker.ts',
  verify: 'src/source/verify-worker.ts',
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

// ---------------------------------------------------------------------------
// A pool of threads that answer jobs


export interface WorkerPoolOptions {
  /** How many threads (at least 1). */
  threads: number;
  /** Starts one thread, e.g. () => startWorker('verify', url, data). */
  start: () => Worker;
  /** What one thread is, for errors: "verify worker". */
  what: string;
  /** Jobs in flight on one thread before `submit` waits for room. Default: no limit. */
  depth?: number;
  /** Whether the threads may keep the process alive by themselves. Default true. */
  ref?: boolean;
}

interface Thread {
  readonly worker: Worker;
  inFlight: number;
  /** Why it stopped taking jobs (an error event, an exit); undefined while it runs. */
  stopped: Error | undefined;
}

interface Waiter<R> {
  resolve: (reply: R) => void;
  reject: (error: Error) => void;
  thread: Thread;
}

/**
 * Threads that answer job messages `{ ...job, id }` with reply messages that
 * carry the same `id`. A job goes to the thread with the fewest jobs in
 * flight; with `depth`, `submit` waits while every thread has that many. A
 * thread that fails or exits fails its jobs and gets no more; `close`
 * stops every thread and fails what is still in flight.
 */
export class WorkerPool<J extends object, R extends { id: number }> {
  readonly what: string;
  private readonly threads: Thread[];
  private readonly depth: number;
  private readonly waiting = new Map<number, Waiter<R>>();
  private roomWaiters: (() => void)[] = [];
  private nextId = 0;
  private closedError: HfkError | undefined;
  private closing: Promise<void> | undefined;

  constructor(options: WorkerPoolOptions) {
    if (!Number.isInteger(options.threads) || options.threads < 1) {
      throw new UsageError(`a ${options.what} pool needs a whole number of threads, at least 1: got ${options.threads}`);
    }
    const depth = options.depth ?? Infinity;
    if (depth !== Infinity && (!Number.isInteger(depth) || depth < 1)) {
      throw new UsageError(`depth of a ${options.what} pool must be a whole number, at least 1: got ${depth}`);
    }
    this.what = options.what;
    this.depth = depth;
    this.threads = Array.from({ length: options.threads }, () => {
      const t: Thread = { worker: options.start(), inFlight: 0, stopped: undefined };
      if (options.ref === false) t.worker.unref();
      t.worker.on('message', (r: R) => this.settle(t, r));
      t.worker.on('error', (e) => this.stop(t, new HfkError('E_WORKER', `${this.what} failed: ${e.message}`, { cause: e })));
      t.worker.on('exit', (code) => this.stop(t, new HfkError('E_WORKER', `${this.what} exited with status ${code}`)));
      return t;
    });
  }

  /** Whether `close` was called (jobs submitted now are refused). */
  get closed(): boolean {
    return this.closedError !== undefined;
  }

  /** Jobs posted and not yet answered. */
  get inFlight(): number {
    return this.waiting.size;
  }

  /**
   * Waits until a thread has room, then posts the job to the least busy one;
   * `transfer` lists memory handed over (detached here). Resolves once the
   * job is posted, with the promise of its reply.
   */
  async submit(job: J, transfer: readonly TransferListItem[] = []): Promise<{ reply: Promise<R> }> {
    for (;;) {
      const best = this.leastBusy();
      if (best.inFlight < this.depth) return { reply: this.post(best, job, transfer) };
      await new Promise<void>((resolve) => this.roomWaiters.push(resolve));
    }
  }

  /** Posts the job (after waiting for room) and resolves with its reply; posted at once when a thread has room. */
  run(job: J, transfer: readonly TransferListItem[] = []): Promise<R> {
    let best: Thread;
    try {
      best = this.leastBusy();
    } catch (e) {
      return Promise.reject(e);
    }
    if (best.inFlight < this.depth) return this.post(best, job, transfer);
    return this.submit(job, transfer).then((s) => s.reply);
  }

  /** The live thread with the fewest jobs; throws when the pool is closed or no thread is left. */
  private leastBusy(): Thread {
    if (this.closedError) throw this.closedError;
    let best: Thread | undefined;
    for (const t of this.threads) if (!t.stopped && (!best || t.inFlight < best.inFlight)) best = t;
    if (!best) {
      const why = this.threads[0]!.stopped!;
      throw new HfkError('E_WORKER', `no ${this.what} is left to take the job: ${why.message}`, { cause: why });
    }
    return best;
  }

  /** Stops every thread; jobs in flight fail. Idempotent. */
  close(): Promise<void> {
    this.closing ??= (async () => {
      this.closedError = new HfkError('E_WORKER', `the ${this.what} pool is closed`);
      for (const [id, w] of this.waiting) {
        this.waiting.delete(id);
        w.reject(this.closedError);
      }
      this.wakeAll();
      await Promise.all(this.threads.map((t) => t.worker.terminate()));
    })();
    return this.closing;
  }

  private post(t: Thread, job: J, transfer: readonly TransferListItem[]): Promise<R> {
    const id = this.nextId++;
    const reply = new Promise<R>((resolve, reject) => this.waiting.set(id, { resolve, reject, thread: t }));
    t.inFlight++;
    try {
      t.worker.postMessage({ ...job, id }, transfer as TransferListItem[]);
    } catch (e) {
      this.waiting.delete(id);
      t.inFlight--;
      throw e;
    }
    return reply;
  }

  private settle(t: Thread, r: R): void {
    const w = this.waiting.get(r.id);
    if (!w) return;
    this.waiting.delete(r.id);
    t.inFlight--;
    this.roomWaiters.shift()?.();
    w.resolve(r);
  }

  private stop(t: Thread, e: Error): void {
    t.stopped ??= e;
    for (const [id, w] of this.waiting) {
      if (w.thread !== t) continue;
      this.waiting.delete(id);
      t.inFlight--;
      w.reject(this.closedError ?? e);
    }
    this.wakeAll(); // those waiting for room look again: at other threads, or at none left
  }

  private wakeAll(): void {
    const waiters = this.roomWaiters;
    this.roomWaiters = [];
    for (const w of waiters) w();
  }
}
