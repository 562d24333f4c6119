// A read-through disk cache in front of any block source: a block the cache
// holds is read (and verified again) from disk; any other comes from the
// inner source and is written to the cache as it was received.

import type { DiskCache } from './diskcache.ts';
import type { Block, BlockRequest, BlockSource, SourceStats } from './source.ts';

export class ReadThroughCache implements BlockSource {
  readonly location: string;
  readonly disk: DiskCache;
  private readonly inner: BlockSource;
  private hits = 0;

  constructor(disk: DiskCache, inner: BlockSource) {
    this.disk = disk;
    this.inner = inner;
    this.location = inner.location;
  }

  holds(hash: string): boolean {
    return this.disk.has(hash) || (this.inner.holds?.(hash) ?? false);
  }

  async get(req: BlockRequest, signal?: AbortSignal): Promise<Block> {
    const data = await this.disk.getBlock(req.hash, req.length, req.digest, req.objectSize);
    if (data) {
      this.hits++;
      return { data, from: 'disk' };
    }
    const block = await this.inner.get(req, signal);
    if (!block.object) return block;
    const kept = this.disk.putObject(req.hash, block.object);
    block.kept = block.kept ? Promise.all([block.kept, kept]).then(() => {}) : kept;
    return block;
  }

  stats(into: SourceStats): void {
    into.diskHits += this.hits;
    into.disk = this.disk.stats();
    this.inner.stats?.(into);
  }

  /** Cancels the inner source's requests, then lets the cache finish its writes. */
  async close(): Promise<void> {
    await this.inner.close();
    await this.disk.flush();
  }
}
