// Property tests of the manifest and pointer decoders, and of the store
// paths that read them (readPointer, readManifest): any change to a signed
// manifest is a typed error, random bytes never escape as anything but a
// typed error, and valid ones round-trip exactly.

import { createPrivateKey, createPublicKey } from 'node:crypto';
import fc from 'fast-check';
import { describe, expect, it } from 'vitest';
import { HfkError, MissingError, SourceError } from '../errors.ts';
import type { ReadOptions, StoreReader } from '../store/store.ts';
import { readManifest, readPointer } from '../store/images.ts';
import { type PrivateKey, publicKeyFromRaw } from './keys.ts';
import { manifestPath, pointerPath } from './layout.ts';
import { blockCountFor, decodeManifest, decodePointer, encodeManifest, encodePointer, type Manifest, manifestDigest, type Pointer } from './manifest.ts';

function fixedKey(seedByte: number): PrivateKey {
  const seed = Buffer.alloc(32, seedByte);
  const key = createPrivateKey({ key: Buffer.concat([Buffer.from('302e020100300506032b657004220420', 'hex'), seed]), format: 'der', type: 'pkcs8' });
  const der = createPublicKey(key).export({ format: 'der', type: 'spki' });
  return { key, publicKey: publicKeyFromRaw(der.subarray(der.length - 32)) };
}

const key = fixedKey(7);
const otherKey = fixedKey(9);
const hex64 = fc.uint8Array({ minLength: 32, maxLength: 32 }).map((u) => Buffer.from(u).toString('hex'));

const manifest: fc.Arbitrary<Manifest> = fc
  .record({
    name: fc.constantFrom('demo', 'debian-12', 'x'),
    version: fc.integer({ min: 1, max: 1000 }),
    blockSize: fc.constantFrom(4096, 65536),
    blocks: fc.integer({ min: 1, max: 40 }),
    tail: fc.nat(4095),
    unique: fc.array(hex64, { minLength: 1, maxLength: 6 }),
    picks: fc.array(fc.nat(), { minLength: 40, maxLength: 40 }),
    digests: fc.boolean(),
  })
  .map((r) => {
    const imageSize = (r.blocks - 1) * r.blockSize + Math.min(r.tail + 1, r.blockSize);
    const unique = [...new Set(r.unique)];
    const blocks = Array.from({ length: blockCountFor(imageSize, r.blockSize) }, (_, i) => {
      const p = r.picks[i]! % (unique.length + 1);
      return p === unique.length ? null : unique[p]!;
    });
    const used = [...new Set(blocks.filter((b): b is string => b !== null))];
    const m: Manifest = {
      header: {
        name: r.name,
        version: r.version,
        created: '2026-01-02T03:04:05.000Z',
        imageSize,
        blockSize: r.blockSize,
        blockCount: blocks.length,
        codec: 'zstd',
        filesystem: 'squashfs',
        source: { kind: 'file', name: 'root.sqfs' },
        previous: r.version > 1 ? { version: r.version - 1, sha256: 'c'.repeat(64) } : null,
        keyId: key.publicKey.id,
      },
      blocks,
      objectSizes: new Map(used.map((h, i) => [h, 1 + ((i * 977) % r.blockSize)])),
      ...(r.digests ? { objectDigests: new Map(used.map((h) => [h, manifestDigest(Buffer.from(h))])) } : {}),
    };
    return m;
  });

/** The error a call throws, or undefined. */
function thrown(f: () => unknown): unknown {
  try {
    f();
    return undefined;
  } catch (e) {
    return e;
  }
}

/** A store of a few files in memory. */
class FilesStore implements StoreReader {
  readonly location = 'mem://fuzz/';
  readonly files: Map<string, Buffer>;
  constructor(files: Map<string, Buffer>) {
    this.files = files;
  }
  async read(rel: string, options: ReadOptions = {}): Promise<Buffer> {
    const b = this.files.get(rel);
    if (!b) throw new MissingError(this.location, `${this.location}${rel}: HTTP 404`);
    if (options.maxBytes !== undefined && b.length > options.maxBytes) throw new MissingError(this.location, `${rel} is too large`);
    return Buffer.from(b);
  }
  async close(): Promise<void> {}
}

describe('manifest and pointer decoders (property)', () => {
  it('a signed manifest round-trips exactly; any flipped bit or cut makes it a typed error', { timeout: 30_000 }, () => {
    fc.assert(
      fc.property(manifest, fc.nat(), fc.integer({ min: 0, max: 7 }), fc.nat(), (m, at, bit, cut) => {
        const bytes = encodeManifest(m, key);
        const back = decodeManifest(bytes, key.publicKey);
        expect(back.header).toEqual(m.header);
        expect(back.blocks).toEqual(m.blocks);
        expect([...back.objectSizes]).toEqual([...m.objectSizes]);
        const flipped = Buffer.from(bytes);
        flipped[at % flipped.length]! ^= 1 << bit;
        expect(thrown(() => decodeManifest(flipped, key.publicKey))).toBeInstanceOf(HfkError);
        expect(thrown(() => decodeManifest(bytes.subarray(0, cut % bytes.length), key.publicKey))).toBeInstanceOf(HfkError);
        expect(thrown(() => decodeManifest(bytes, otherKey.publicKey))).toBeInstanceOf(HfkError);
      }),
      { numRuns: 200 },
    );
  });

  it('unsigned decoding of random or damaged bytes: a typed error or a manifest whose tables agree with its header', { timeout: 30_000 }, () => {
    const damaged = fc.tuple(manifest, fc.array(fc.tuple(fc.nat(), fc.integer({ min: 0, max: 255 })), { minLength: 1, maxLength: 4 })).map(([m, edits]) => {
      const b = Buffer.from(encodeManifest(m, key));
      for (const [at, v] of edits) b[at % b.length] = v;
      return b;
    });
    const random = fc.uint8Array({ maxLength: 300 }).map((u) => Buffer.concat([Buffer.from('HFKM\x02\x00\x00\x00'), Buffer.from(u)]));
    fc.assert(
      fc.property(fc.oneof(damaged, random, fc.uint8Array({ maxLength: 100 }).map((u) => Buffer.from(u))), (bytes) => {
        let m: Manifest;
        try {
          m = decodeManifest(bytes, null);
        } catch (e) {
          expect(e).toBeInstanceOf(HfkError);
          return;
        }
        expect(m.blocks.length).toBe(m.header.blockCount);
        for (const h of m.blocks) if (h !== null) expect(m.objectSizes.has(h)).toBe(true);
      }),
      { numRuns: 1000 },
    );
  });

  it('pointers: valid ones round-trip; random and mutated JSON is a typed error or a pointer the schema accepts', { timeout: 30_000 }, () => {
    const pointer: fc.Arbitrary<Pointer> = fc.record({
      format: fc.constant('hfk-pointer/1' as const),
      name: fc.constantFrom('demo', 'debian-12'),
      version: fc.integer({ min: 1, max: 1e6 }),
      manifest: fc.integer({ min: 1, max: 1e6 }).map((v) => `v${v}.hfkm`),
      sha256: hex64,
      size: fc.integer({ min: 1, max: 1e8 }),
    });
    fc.assert(
      fc.property(pointer, fc.nat(), fc.integer({ min: 0, max: 255 }), fc.string({ maxLength: 80 }), (p, at, v, junk) => {
        const bytes = encodePointer(p);
        expect(decodePointer(bytes)).toEqual(p);
        const mutated = Buffer.from(bytes);
        mutated[at % mutated.length] = v;
        for (const b of [mutated, Buffer.from(junk), Buffer.from(JSON.stringify({ ...p, version: junk }))]) {
          let got: Pointer;
          try {
            got = decodePointer(b);
          } catch (e) {
            expect(e).toBeInstanceOf(HfkError);
            continue;
          }
          expect(got.format).toBe('hfk-pointer/1');
          expect(Number.isInteger(got.version) && got.version > 0).toBe(true);
          expect(got.sha256).toMatch(/^[0-9a-f]{64}$/);
        }
      }),
      { numRuns: 500 },
    );
  });

  it('readPointer and readManifest over a store with damaged files: a typed error naming the store, or the very manifest', { timeout: 30_000 }, async () => {
    await fc.assert(
      fc.asyncProperty(manifest, fc.option(fc.tuple(fc.nat(), fc.integer({ min: 0, max: 255 })), { nil: undefined }), fc.boolean(), async (m, edit, damagePointer) => {
        const bytes = encodeManifest(m, key);
        const name = m.header.name;
        const v = m.header.version;
        const ptr = encodePointer({ format: 'hfk-pointer/1', name, version: v, manifest: `v${v}.hfkm`, sha256: manifestDigest(bytes), size: bytes.length });
        const files = new Map([
          [pointerPath(name), Buffer.from(ptr)],
          [manifestPath(name, v), Buffer.from(bytes)],
        ]);
        if (edit) {
          const f = files.get(damagePointer ? pointerPath(name) : manifestPath(name, v))!;
          const before = f[edit[0] % f.length];
          f[edit[0] % f.length] = edit[1];
          if (before === edit[1]) return; // no change made
        }
        const store = new FilesStore(files);
        try {
          const p = await readPointer(store, name);
          const loaded = await readManifest(store, name, undefined, key.publicKey);
          expect(p.version).toBe(v);
          expect(loaded.bytes.equals(bytes)).toBe(true);
          expect(loaded.manifest.blocks).toEqual(m.blocks);
        } catch (e) {
          expect(e).toBeInstanceOf(HfkError);
          expect(edit).toBeDefined(); // only damage fails
          // Named by the error: in its message, or as the source it counts against.
          const source = e instanceof SourceError ? e.source : undefined;
          expect(source === store.location || (e as Error).message.includes(store.location)).toBe(true);
        }
      }),
      { numRuns: 300 },
    );
  });
});
