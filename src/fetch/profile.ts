// The boot profile's helpers: which gap blocks to prefetch after it, and the
// gate that lets background blocks through one per turn of the event loop.

import type { Manifest } from '../format/manifest.ts';

/**
 * The blocks in gaps of at most `maxBlocks` between blocks the profile
 * names, in image order; one block per content, none the profile names, no
 * zero block, and only gaps with profiled blocks on both sides. The same for
 * every boot of one image version (the cache's contents play no part, or a
 * warm boot would fetch gaps its fill boot had cut out of larger ones).
 * None at all when the profile's and the gaps' objects together would take
 * more than `budget` bytes: gaps must not push out what the boots read.
 */
export function profileGaps(manifest: Manifest, profile: readonly number[], maxBlocks: number, budget: number | undefined): number[] {
  if (maxBlocks <= 0 || budget === undefined) return [];
  const blocks = manifest.blocks;
  const named = new Set(profile);
  const known = new Set<string>();
  for (const i of profile) if (blocks[i]) known.add(blocks[i]);
  const out: number[] = [];
  for (let i = 0; i < blocks.length; ) {
    if (named.has(i)) {
      i++;
      continue;
    }
    let j = i;
    while (j < blocks.length && !named.has(j)) j++;
    if (i > 0 && j < blocks.length && j - i <= maxBlocks) {
      for (let k = i; k < j; k++) {
        const h = blocks[k];
        if (h && !known.has(h)) {
          known.add(h);
          out.push(k);
        }
      }
    }
    i = j;
  }
  let bytes = 0;
  for (const h of known) bytes += manifest.objectSizes.get(h) ?? manifest.header.blockSize;
  return bytes <= budget ? out : [];
}

/**
 * Background work waits its turn here: one waiter is let through per turn of
 * the event loop, so FUSE requests that arrive meanwhile are served in
 * between. A block a reader waits for skips the queue (hurry).
 */
export class Gate {
  private readonly queue: { key: string; go: () => void }[] = [];
  private scheduled = false;
  private readonly wanted = new Set<string>();

  turn(key: string): Promise<void> {
    if (this.wanted.has(key)) return Promise.resolve();
    return new Promise((go) => {
      this.queue.push({ key, go });
      this.schedule();
    });
  }

  /** A reader waits for `key`: let it through now, and skip the gate for it from now on. */
  hurry(key: string): void {
    this.wanted.add(key);
    const i = this.queue.findIndex((w) => w.key === key);
    if (i >= 0) this.queue.splice(i, 1)[0]!.go();
  }

  /** `key` is done: forget that a reader wanted it. */
  forget(key: string): void {
    this.wanted.delete(key);
  }

  private schedule(): void {
    if (this.scheduled || this.queue.length === 0) return;
    this.scheduled = true;
    setImmediate(() => {
      this.scheduled = false;
      this.queue.shift()?.go();
      this.schedule();
    });
  }
}
