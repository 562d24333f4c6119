// An in-memory origin for unit tests of the block-source layer: a map of
// store paths to bytes, with per-path behaviour a test can script (missing,
// broken, corrupt, slow, never answering) and a log of what was asked.

import { AbortedError, BrokenError, MissingError } from '../../errors.ts';
import { blockHash, encodeBlock } from '../../format/codec.ts';
import { blockPath } from '../../format/layout.ts';
import type { ReadOptions, StoreReader } from '../../store/store.ts';

export type Behaviour = 'ok' | 'missing' | 'broken' | 'corrupt' | 'hang' | { delayMs: number };

export class MemoryOrigin implements StoreReader {
  readonly location: string;
  readonly files = new Map<string, Buffer>();
  /** Paths asked for, in order. */
  readonly asked: string[] = [];
  /** How every read behaves (or, per path, `behaviours`). */
  behaviour: Behaviour = 'ok';
  readonly behaviours = new Map<string, Behaviour>();
  closed = false;
  /** Reads cancelled by their signal. */
  cancelled = 0;

  constructor(location: string) {
    this.location = location;
  }

  async read(rel: string, options: ReadOptions = {}): Promise<Buffer> {
    this.asked.push(rel);
    const b = this.behaviours.get(rel) ?? this.behaviour;
    if (b === 'hang' || typeof b === 'object') {
      await new Promise<void>((resolve, reject) => {
        const t = b === 'hang' ? undefined : setTimeout(resolve, b.delayMs);
        const abort = () => {
          clearTimeout(t);
          this.cancelled++;
          reject(new AbortedError(`${this.location}${rel}: cancelled`));
        };
        if (options.signal?.aborted) return abort();
        options.signal?.addEventListener('abort', abort, { once: true });
      });
    }
    if (b === 'broken') throw new BrokenError(this.location, `${this.location}${rel}: HTTP 503`);
    const body = this.files.get(rel);
    if (!body || b === 'missing') throw new MissingError(this.location, `${this.location}${rel}: HTTP 404`);
    if (b === 'corrupt') {
      const bad = Buffer.from(body);
      bad[bad.length - 1]! ^= 0xff;
      return bad;
    }
    return Buffer.from(body);
  }

  async close(): Promise<void> {
    this.closed = true;
  }
}

/** A block of `size` bytes made from `seed`, stored uncompressed: its hash, object and decoded bytes. */
export function testBlock(seed: number, size = 4096): { hash: string; data: Buffer; object: Buffer; rel: string } {
  const data = Buffer.alloc(size, seed & 0xff);
  data.writeUInt32LE(seed, 0);
  const hash = blockHash(data);
  const object = encodeBlock(data, 'none');
  return { hash, data, object, rel: blockPath(hash) };
}
