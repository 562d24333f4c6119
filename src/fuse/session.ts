// Serves one mounted FUSE connection. A dedicated worker thread does the
// blocking read(2) of /dev/fuse in a loop and posts each request to the main
// thread (a blocking read on libuv's small threadpool would starve every
// other fs call). The main thread dispatches requests concurrently through
// the protocol layer and writes each reply with one writev(2), as the kernel
// requires; writes to /dev/fuse never block. The session ends when the
// kernel reports ENODEV on read: the filesystem was unmounted (`umount`, or
// `umount -l` once its last user is gone) or the connection was aborted.
//
// A thread blocked in read(2) cannot be terminated, and Node joins its
// worker threads at exit: a process that exits while the session runs would
// hang. So `stop()` (and an exit hook) raises a shared flag and sends the
// kernel a NOTIFY_RETRIEVE for a file it has cached, whose NOTIFY_REPLY
// wakes the reader; when the kernel refuses that, the `abort` callback
// (mount.ts: abort the connection) makes the read fail instead.
//
// The worker's code is a few lines of plain JavaScript run with `eval`: it
// needs nothing but fs and Atomics, so it starts at once instead of loading
// the whole bundle again, which takes long on a slow machine at boot
// (figures: docs/PERFORMANCE.md).

import * as fs from 'node:fs';
import { Worker } from 'node:worker_threads';
import { errnoCode } from '../errors.ts';
import { FuseProtocolError } from './errors.ts';
import { type FileSystem, ROOT_ID } from './fs.ts';
import {
  Connection,
  encodeNotifyRetrieve,
  type Negotiated,
  opcodeName,
  type ProtocolOptions,
  type Reply,
  requestBufferSize,
  resolveProtocolOptions,
} from './protocol.ts';

const ROLE = 'hfk-fuse-reader';

interface ReaderConfig {
  role: typeof ROLE;
  fd: number;
  bufferSize: number;
  /** Int32 flag: 1 = stop after the current read. */
  stop: SharedArrayBuffer;
}

/** What the reader posts when it stops reading. */
export interface ReaderEnd {
  end: true;
  /** errno code of the failed read (ENODEV when unmounted), or STOPPED. */
  code: string | undefined;
  message: string;
}

export type ReaderMessage = Uint8Array | ReaderEnd;

// ---------------------------------------------------------------------------
// The reader thread: read(2) /dev/fuse in a loop, post each request.
// workerData is a ReaderConfig; it posts Uint8Array requests, then a ReaderEnd.

const READER_SOURCE = `
'use strict';
const { parentPort, workerData: cfg } = process.getBuiltinModule('node:worker_threads');
const fs = process.getBuiltinModule('node:fs');
const buf = Buffer.allocUnsafe(cfg.bufferSize);
const stop = new Int32Array(cfg.stop);
const end = (code, message) => parentPort.postMessage({ end: true, code, message });
for (;;) {
  let n;
  try {
    n = fs.readSync(cfg.fd, buf, 0, buf.length, null);
  } catch (e) {
    // EINTR/EAGAIN: try again. ENOENT: the request was interrupted before we got it.
    if (Atomics.load(stop, 0) === 0 && (e.code === 'EINTR' || e.code === 'EAGAIN' || e.code === 'ENOENT')) continue;
    end(e.code, e.message);
    break;
  }
  if (Atomics.load(stop, 0) !== 0) { end('STOPPED', 'the session was stopped'); break; }
  if (n === 0) { end(undefined, 'end of file on /dev/fuse'); break; }
  const req = new Uint8Array(n);
  req.set(buf.subarray(0, n));
  parentPort.postMessage(req, [req.buffer]);
}
`;

/**
 * Starts a thread that reads requests from a mounted /dev/fuse fd and posts
 * each (a Uint8Array), then a ReaderEnd. `stop` is an Int32 flag: 1 = stop
 * after the current read. The keeper (reader/keeper.ts) uses it too.
 */
export function startDeviceReader(fd: number, bufferSize: number, stop: SharedArrayBuffer): Worker {
  return new Worker(READER_SOURCE, {
    eval: true,
    execArgv: [], // whatever flags this process has (e.g. --input-type=module), the worker is plain script
    workerData: { role: ROLE, fd, bufferSize, stop } satisfies ReaderConfig,
  });
}

/**
 * How the session ended, from how its reader stopped. A connection that is
 * gone reads as ENODEV, or as ECONNABORTED when the kernel marked it
 * aborted (seen once in many runs on Linux 6.18 after `umount -l`, with
 * FUSE_ABORT_ERROR not asked for): either way the filesystem is unmounted.
 */
export function readerEnd(m: ReaderEnd): SessionEnd {
  if (m.code === 'ENODEV' || m.code === 'ECONNABORTED') return { reason: 'unmounted' };
  if (m.code === 'STOPPED') return { reason: 'stopped' };
  return { reason: 'failed', error: new FuseProtocolError(`reading /dev/fuse failed: ${m.message}`) };
}

// ---------------------------------------------------------------------------
// The session

export interface SessionOptions extends ProtocolOptions {
  /**
   * Problems worth a log line: a filesystem method that failed with anything
   * but FuseErrnoError (answered with errnoOf, EIO by default; `opcode` says
   * which request), malformed requests, failed writes to /dev/fuse.
   */
  onError?: (error: unknown, opcode?: string) => void;
  /**
   * Aborts the connection from outside, synchronously (mount.ts: the fusectl
   * abort file, or `umount -f -l`). Used by `stop()` and at process exit when
   * the reader cannot be woken by a notification.
   */
  abort?: () => void;
  /**
   * Requests come from a keeper process instead of this process's own read
   * of the fd (reader/keeper.ts): the keeper reads /dev/fuse and keeps every
   * request until it is handled, so a new reader can take over the fd.
   * Replies are still written to `fd` here.
   */
  feed?: RequestFeed;
}

/** Requests handed to a session by whoever reads /dev/fuse for it. */
export interface RequestFeed {
  /** Called once by the session: where requests and the end go. `replay`: handle, but do not answer (INIT again, for a new reader). */
  attach(sink: { request(req: Buffer, replay: boolean): void; end(end: SessionEnd): void }): void;
  /** The request `unique` was answered (or needs no answer). */
  handled(unique: bigint): void;
}

/** How a session ended. */
export interface SessionEnd {
  /**
   * unmounted: the kernel said ENODEV or ECONNABORTED (umount, umount -l, an abort);
   * stopped: `stop()` (the mount, if any, is left dead: ENOTCONN until unmounted);
   * failed: any other end of the reader (the error says which).
   */
  reason: 'unmounted' | 'stopped' | 'failed';
  error?: Error;
}

export class FuseSession {
  readonly fd: number;
  readonly connection: Connection;
  /** Resolves once INIT has been answered; rejects with FuseProtocolError if the kernel was refused or the session ended first. */
  readonly initialized: Promise<Negotiated>;
  /** Resolves when the session has ended, the reader has exited and the fd is closed. */
  readonly done: Promise<SessionEnd>;

  private readonly worker: Worker | undefined;
  private readonly feed: RequestFeed | undefined;
  private readonly stopFlag = new SharedArrayBuffer(4);
  private readonly onError: (error: unknown, opcode?: string) => void;
  private readonly abort: (() => void) | undefined;
  private readonly settleInit: (r: Negotiated | FuseProtocolError) => void;
  private readonly exitHook = () => this.wakeReaderToStop();
  private resolveDone!: (end: SessionEnd) => void;
  private ended = false;
  private workerExited = false;
  private fdClosed = false;
  private pendingEnd: SessionEnd | undefined;

  private constructor(fd: number, filesystem: FileSystem, options: SessionOptions) {
    this.fd = fd;
    this.onError = options.onError ?? (() => {});
    this.abort = options.abort;
    const opts = resolveProtocolOptions(options);
    let settleInit!: (r: Negotiated | FuseProtocolError) => void;
    this.initialized = new Promise<Negotiated>((resolve, reject) => {
      settleInit = (r) => (r instanceof FuseProtocolError ? reject(r) : resolve(r));
    });
    this.initialized.catch(() => {}); // observed by whoever awaits it
    this.settleInit = settleInit;
    this.connection = new Connection(filesystem, opts, {
      onInit: settleInit,
      onFsError: (e, opcode) => this.onError(e, opcodeName(opcode)),
      onProtocolError: (e) => this.onError(e),
    });
    this.done = new Promise((resolve) => (this.resolveDone = resolve));
    this.feed = options.feed;
    if (this.feed) {
      this.worker = undefined;
      this.workerExited = true;
      this.feed.attach({ request: (req, replay) => this.handle(req, replay), end: (end) => this.finish(end) });
      return;
    }
    const worker = (this.worker = startDeviceReader(fd, requestBufferSize(opts.maxWrite), this.stopFlag));
    worker.on('message', (m: ReaderMessage) => {
      if (m instanceof Uint8Array) this.handle(Buffer.from(m.buffer, m.byteOffset, m.byteLength));
      else this.finish(readerEnd(m));
    });
    worker.on('error', (e) => this.finish({ reason: 'failed', error: e }));
    worker.on('exit', () => {
      this.workerExited = true;
      this.finish({ reason: 'failed', error: new FuseProtocolError('the /dev/fuse reader thread exited') });
      this.closeFd();
    });
    process.on('exit', this.exitHook);
  }

  /**
   * Starts serving a mounted /dev/fuse descriptor. The session owns the fd
   * from now on and closes it at the end. The first request will be INIT.
   */
  static start(fd: number, filesystem: FileSystem, options: SessionOptions = {}): FuseSession {
    return new FuseSession(fd, filesystem, options);
  }

  /** Whether the session still serves requests. */
  get running(): boolean {
    return !this.ended;
  }

  /**
   * Stops serving without unmounting: the reader is woken and exits, the fd
   * is closed, and the kernel aborts the connection, so the mount (if any)
   * answers ENOTCONN until it is unmounted. Resolves with `done`.
   */
  stop(): Promise<SessionEnd> {
    if (this.feed) this.finish({ reason: 'stopped' });
    this.wakeReaderToStop();
    return this.done;
  }

  private wakeReaderToStop(): void {
    if (this.workerExited || this.fdClosed) return;
    Atomics.store(new Int32Array(this.stopFlag), 0, 1);
    // Old kernels accept the root; new ones only a cached regular file.
    const candidates = [this.connection.cachedFileId, ROOT_ID].filter((id) => id !== undefined);
    for (const id of candidates) {
      try {
        fs.writeSync(this.fd, encodeNotifyRetrieve(0, id, 0, 0));
        return;
      } catch (e) {
        if (errnoCode(e) === 'ENODEV') return; // unmounted already: the reader is waking up anyway
      }
    }
    try {
      this.abort?.();
    } catch (e) {
      this.onError(e);
    }
  }

  private handle(request: Buffer, replay = false): void {
    const feed = this.feed;
    const handled = () => {
      if (feed && request.length >= 16) feed.handled(request.readBigUInt64LE(8));
    };
    this.connection.dispatch(request).then(
      (reply) => {
        if (reply) {
          if (replay) this.connection.release(reply);
          else this.write(reply);
        }
        if (!replay) handled();
      },
      (e) => {
        this.onError(e);
        if (!replay) handled();
      },
    );
  }

  private write(reply: Reply): void {
    if (this.fdClosed) return;
    try {
      fs.writevSync(this.fd, reply);
    } catch (e) {
      const code = errnoCode(e);
      // ENOENT: the request was interrupted and is gone. ENODEV: unmounted; the reader will notice.
      if (code !== 'ENOENT' && code !== 'ENODEV') {
        this.onError(new FuseProtocolError(`writing a reply to /dev/fuse failed: ${(e as Error).message}`, { cause: e }));
      }
    } finally {
      // The kernel has copied the data (or never will): READ buffers may be reused.
      this.connection.release(reply);
    }
  }

  private finish(end: SessionEnd): void {
    if (this.ended) return;
    this.ended = true;
    process.off('exit', this.exitHook);
    this.settleInit(new FuseProtocolError(`the FUSE session ended before INIT (${end.error?.message ?? end.reason})`));
    this.connection.abortAll();
    if (!this.connection.destroyed) {
      try {
        this.connection.fs.destroy?.();
      } catch (e) {
        this.onError(e);
      }
    }
    this.pendingEnd = end;
    if (this.workerExited) this.closeFd();
  }

  /** Closes the fd once the reader is gone (so it never reads a reused fd), then resolves `done`. */
  private closeFd(): void {
    if (this.fdClosed || !this.pendingEnd) return;
    this.fdClosed = true;
    try {
      fs.closeSync(this.fd);
    } catch {
      // already closed
    }
    this.resolveDone(this.pendingEnd);
  }
}
