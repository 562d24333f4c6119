import { Worker } from 'node:worker_threads';
import { afterEach, describe, expect, it } from 'vitest';
import { HfkError, UsageError } from '../errors.ts';
import { transferable } from './transfer.ts';
import { WorkerPool } from './worker.ts';

// A thread that answers { id, op, ms } after `ms`: 'echo' with its thread id
// (and the bytes it was given), 'exit' by exiting, 'throw' by failing.
const ECHO = `
const { parentPort, threadId } = require('node:worker_threads');
parentPort.on('message', (job) => {
  if (job.op === 'exit') process.exit(3);
  if (job.op === 'throw') throw new Error('thread broke');
  setTimeout(() => parentPort.postMessage({ id: job.id, thread: threadId, size: job.data ? job.data.length : 0 }), job.ms ?? 0);
});
`;

interface Job {
  op: 'echo' | 'exit' | 'throw';
  ms?: number;
  data?: Uint8Array;
}
interface Reply {
  id: number;
  thread: number;
  size: number;
}

const pools: WorkerPool<Job, Reply>[] = [];
function pool(threads: number, depth?: number): WorkerPool<Job, Reply> {
  const p = new WorkerPool<Job, Reply>({ threads, what: 'echo worker', start: () => new Worker(ECHO, { eval: true }), ...(depth ? { depth } : {}) });
  pools.push(p);
  return p;
}
afterEach(async () => {
  await Promise.all(pools.splice(0).map((p) => p.close()));
});

describe('WorkerPool', () => {
  it('refuses a pool without threads or with a depth below 1', () => {
    const start = () => new Worker(ECHO, { eval: true });
    expect(() => new WorkerPool({ threads: 0, what: 'echo worker', start })).toThrow(UsageError);
    expect(() => new WorkerPool({ threads: 1, depth: 0, what: 'echo worker', start })).toThrow('depth of a echo worker pool must be a whole number, at least 1: got 0');
  });

  it('answers each job with its own reply, spread over the least busy threads', async () => {
    const p = pool(3);
    const replies = await Promise.all([30, 0, 20, 10, 0, 5].map((ms) => p.run({ op: 'echo', ms })));
    expect(replies.map((r) => r.id)).toEqual([0, 1, 2, 3, 4, 5]);
    expect(new Set(replies.slice(0, 3).map((r) => r.thread)).size).toBe(3);
    expect(p.inFlight).toBe(0);
  });

  it('transfers the memory it is told to: detached here, whole there', async () => {
    const p = pool(1);
    const data = transferable(new Uint8Array(1000));
    const r = await p.run({ op: 'echo', data }, [data.buffer as ArrayBuffer]);
    expect(r.size).toBe(1000);
    expect(data.byteLength).toBe(0);
  });

  it('transferable: the same bytes when they own their memory, else a copy', () => {
    const own = new Uint8Array(8);
    expect(transferable(own)).toBe(own);
    const view = new Uint8Array(new ArrayBuffer(16), 4, 8);
    const copy = transferable(view);
    expect(copy).not.toBe(view);
    expect(copy.byteLength).toBe(8);
    expect(copy.buffer.byteLength).toBe(8);
  });

  it('with depth, submit waits until a thread has room', async () => {
    const p = pool(2, 1);
    const first = await p.submit({ op: 'echo', ms: 50 });
    const second = await p.submit({ op: 'echo', ms: 50 });
    let third = false;
    const waiting = p.submit({ op: 'echo' }).then((s) => {
      third = true;
      return s.reply;
    });
    for (let i = 0; i < 5; i++) await new Promise(setImmediate); // a few turns of the event loop: no room yet
    expect(third).toBe(false);
    await first.reply;
    await Promise.all([second.reply, waiting]);
    expect(third).toBe(true);
  });

  it('a thread that exits fails its jobs, and the others take the next ones', async () => {
    const p = pool(2);
    const slow = p.run({ op: 'echo', ms: 100 }); // keeps one thread busy, so 'exit' goes to the other
    await expect(p.run({ op: 'exit' })).rejects.toThrow('echo worker exited with status 3');
    expect((await slow).id).toBe(0);
    expect((await p.run({ op: 'echo' })).id).toBe(2);
  });

  it('a thread that throws fails its jobs with its error', async () => {
    const p = pool(1);
    const e = await p.run({ op: 'throw' }).catch((x: unknown) => x);
    expect(e).toBeInstanceOf(HfkError);
    expect((e as HfkError).code).toBe('E_WORKER');
    expect((e as Error).message).toBe('echo worker failed: thread broke');
  });

  it('with no thread left, a job is refused at once', async () => {
    const p = pool(1);
    await expect(p.run({ op: 'exit' })).rejects.toThrow('exited with status 3');
    await expect(p.run({ op: 'echo' })).rejects.toThrow('no echo worker is left to take the job: echo worker exited with status 3');
  });

  it('close fails the jobs in flight, refuses new ones, and can be called again', async () => {
    const p = pool(2);
    const pending = p.run({ op: 'echo', ms: 10_000 });
    const failed = expect(pending).rejects.toThrow('the echo worker pool is closed');
    await p.close();
    await failed;
    expect(p.closed).toBe(true);
    await expect(p.run({ op: 'echo' })).rejects.toThrow('the echo worker pool is closed');
    await p.close();
  });
});
