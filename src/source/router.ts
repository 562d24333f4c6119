// A router: asks its sources in order and moves on only when one does not
// have the block (MissingError). Any other failure is the answer: a source
// that sent bad bytes or could not be reached is for its own decorators
// (failover, retry) to handle, not a reason to try a source further down.
// LAN peers go first, the mirror group last.

import { MissingError } from '../errors.ts';
import { type Block, type BlockRequest, type BlockSource, failureKind, type SourceStats, blockName } from './source.ts';

export class Router implements BlockSource {
  readonly location: string;
  readonly sources: readonly BlockSource[];

  constructor(sources: readonly BlockSource[]) {
    if (sources.length === 0) throw new RangeError('a router needs at least one source');
    this.sources = sources;
    this.location = sources.map((s) => s.location).join(' > ');
  }

  holds(hash: string): boolean {
    return this.sources.some((s) => s.holds?.(hash));
  }

  async get(req: BlockRequest, signal?: AbortSignal): Promise<Block> {
    const missing: string[] = [];
    for (const s of this.sources) {
      try {
        return await s.get(req, signal);
      } catch (e) {
        if (failureKind(e) !== 'missing') throw e;
        missing.push((e as MissingError).message);
      }
    }
    throw new MissingError('(all sources)', `no source has ${blockName(req)}: ${missing.join('; ')}`);
  }

  stats(into: SourceStats): void {
    for (const s of this.sources) s.stats?.(into);
  }

  async close(): Promise<void> {
    await Promise.all(this.sources.map((s) => s.close()));
  }
}
