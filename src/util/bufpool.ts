// Recycles large buffers. Fresh memory is expensive on a VM (every first
// touch of a page faults into the hypervisor), so the publisher reads the
// image into a few buffers that travel to the workers and back.

export class BufferPool {
  private readonly free: ArrayBuffer[] = [];
  readonly capacity: number;
  private readonly max: number;

  constructor(capacity: number, max = 8) {
    this.capacity = capacity;
    this.max = max;
  }

  /** A buffer of `size` bytes (≤ capacity) on pooled memory. */
  get(size: number): Buffer {
    if (size > this.capacity) return Buffer.allocUnsafeSlow(size);
    const ab = this.free.pop() ?? new ArrayBuffer(this.capacity);
    return Buffer.from(ab, 0, size);
  }

  /** Returns memory to the pool (foreign or detached buffers are ignored). */
  put(ab: ArrayBufferLike): void {
    if (ab instanceof ArrayBuffer && ab.byteLength === this.capacity && this.free.length < this.max) this.free.push(ab);
  }
}

/**
 * Recycles buffers of many sizes: each is cut from memory rounded up to a
 * multiple of `granule`, and goes back to the list of that rounded size. The
 * reader takes every block object and decoded block from here, so a long
 * read reuses the same few megabytes instead of making the garbage collector
 * and the kernel hand out fresh memory for each block. Only memory this pool
 * handed out is taken back; at most `maxFreeBytes` are kept idle.
 */
export class SizedBufferPool {
  private readonly free = new Map<number, ArrayBufferLike[]>();
  /** Memory handed out and not yet back (a second put of the same buffer is ignored). */
  private readonly lent = new WeakSet<ArrayBufferLike>();
  private idle = 0;
  /** Bytes of memory made so far (reuse keeps this small). */
  made = 0;
  readonly granule: number;
  readonly maxFreeBytes: number;
  /** Whether the memory is a SharedArrayBuffer (worker threads read and write it in place). */
  readonly shared: boolean;

  constructor(options: { granule?: number; maxFreeBytes?: number; shared?: boolean } = {}) {
    this.granule = options.granule ?? 4096;
    this.maxFreeBytes = options.maxFreeBytes ?? 32 << 20;
    this.shared = options.shared ?? false;
  }

  /** A buffer of `size` bytes (its contents are whatever was there). */
  get(size: number): Buffer {
    const cap = Math.max(this.granule, Math.ceil(size / this.granule) * this.granule);
    let ab = this.free.get(cap)?.pop();
    if (ab) this.idle -= cap;
    else {
      ab = this.shared ? new SharedArrayBuffer(cap) : new ArrayBuffer(cap);
      this.made += cap;
    }
    this.lent.add(ab);
    return Buffer.from(ab, 0, size);
  }

  /**
   * Takes a buffer back: its memory may be handed out again at once, so
   * nothing may use it after this. Buffers this pool did not hand out, or
   * already took back, are ignored.
   */
  put(b: Uint8Array): void {
    const ab = b.buffer;
    if (!this.lent.delete(ab) || ab.byteLength === 0 || this.idle + ab.byteLength > this.maxFreeBytes) return;
    let list = this.free.get(ab.byteLength);
    if (!list) this.free.set(ab.byteLength, (list = []));
    list.push(ab);
    this.idle += ab.byteLength;
  }

  /** Bytes kept idle for reuse. */
  get idleBytes(): number {
    return this.idle;
  }
}
