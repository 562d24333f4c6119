// In-memory cache of decompressed, verified blocks, keyed by block hash,
// bounded in bytes, least recently used out first.

export class MemoryCache {
  private readonly map = new Map<string, Buffer>();
  private bytes = 0;
  readonly limit: number;
  hits = 0;
  misses = 0;

  constructor(limitBytes: number) {
    this.limit = limitBytes;
  }

  get(hash: string): Buffer | undefined {
    const b = this.map.get(hash);
    if (b === undefined) {
      this.misses++;
      return undefined;
    }
    this.hits++;
    // Re-insert: Map iteration order is insertion order, so the front is the LRU end.
    this.map.delete(hash);
    this.map.set(hash, b);
    return b;
  }

  has(hash: string): boolean {
    return this.map.has(hash);
  }

  set(hash: string, data: Buffer): void {
    if (data.length > this.limit) return;
    const old = this.map.get(hash);
    if (old) {
      this.bytes -= old.length;
      this.map.delete(hash);
    }
    this.map.set(hash, data);
    this.bytes += data.length;
    for (const [k, v] of this.map) {
      if (this.bytes <= this.limit) break;
      this.map.delete(k);
      this.bytes -= v.length;
    }
  }

  get size(): number {
    return this.bytes;
  }

  get count(): number {
    return this.map.size;
  }
}
