import { describe, expect, it } from 'vitest';
import { InvalidError } from '../errors.ts';
import { blockHash, encodeBlock } from '../format/codec.ts';
import { SizedBufferPool } from '../util/bufpool.ts';
import { inlineVerifier, makeVerifier } from './verifier.ts';

const data = Buffer.from('hfk verifies every block '.repeat(3000));
const hash = blockHash(data);

describe('verifiers', () => {
  for (const [name, threads] of [['inline', 0], ['worker threads', 2]] as const) {
    it(`${name}: hands out exactly the block, and the object for the cache`, async () => {
      const v = makeVerifier(threads);
      try {
        const obj = encodeBlock(data, 'zstd');
        const copy = Buffer.from(obj);
        const r = await v.verify('mirror-x', hash, obj, data.length);
        expect(r.data.equals(data)).toBe(true);
        expect(r.object.equals(copy)).toBe(true);
        // Many at once, across the workers.
        const all = await Promise.all(Array.from({ length: 20 }, () => v.verify('m', hash, encodeBlock(data, 'deflate'), data.length)));
        expect(all.every((x) => x.data.equals(data))).toBe(true);
      } finally {
        await v.close();
      }
    });

    it(`${name}: a wrong hash or a broken stream is an InvalidError naming the source`, async () => {
      const v = makeVerifier(threads);
      try {
        const other = encodeBlock(Buffer.from('something else entirely'.repeat(100)), 'zstd');
        await expect(v.verify('mirror-y', hash, other, 2300)).rejects.toThrow(InvalidError);
        await expect(v.verify('mirror-y', hash, other, 2300)).rejects.toThrow(/from mirror-y has content hash [0-9a-f]{12}…: corrupt or forged/);
        const broken = encodeBlock(data, 'zstd');
        broken.fill(7, 5, broken.length - 3);
        await expect(v.verify('mirror-z', hash, broken, data.length)).rejects.toThrow(/from mirror-z: corrupt compressed block/);
      } finally {
        await v.close();
      }
    });
  }

  for (const [name, threads] of [['inline', 0], ['worker threads', 1]] as const) {
    it(`${name}: with a pool, the block is decoded into pooled memory, handed back if the object is bad`, async () => {
      const v = makeVerifier(threads);
      const pool = new SizedBufferPool({ shared: v.threads });
      try {
        const obj = pool.get(encodeBlock(data, 'zstd').length);
        encodeBlock(data, 'zstd').copy(obj);
        const r = await v.verify('m', hash, obj, data.length, { pool });
        expect(r.data.equals(data)).toBe(true);
        expect(r.object).toBe(obj); // not copied, not transferred
        expect(r.data.buffer).toBeInstanceOf(threads ? SharedArrayBuffer : ArrayBuffer);
        expect(pool.made).toBe(obj.buffer.byteLength + r.data.buffer.byteLength); // the block's memory came from the pool
        const bad = pool.get(obj.length);
        obj.copy(bad);
        bad.fill(7, 5, bad.length - 3);
        await expect(v.verify('mirror-z', hash, bad, data.length, { pool })).rejects.toThrow(/from mirror-z: corrupt compressed block/);
        expect(pool.idleBytes).toBe(r.data.buffer.byteLength); // the failed block's memory is back
      } finally {
        await v.close();
      }
    });
  }

  it('a closed worker verifier still answers (on this thread)', async () => {
    const v = makeVerifier(1);
    await v.close();
    expect((await v.verify('m', hash, encodeBlock(data, 'brotli'), data.length)).data.equals(data)).toBe(true);
    expect(inlineVerifier).toBeDefined();
  });
});
