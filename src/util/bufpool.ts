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
