import { createPrivateKey, createPublicKey } from 'node:crypto';
import { readFileSync } from 'node:fs';
import { describe, expect, it } from 'vitest';
import { FormatError, SignatureError, UsageError } from '../errors.ts';
import { generateKeyPair, type PrivateKey, parsePublicKey, publicKeyFromRaw } from './keys.ts';
import {
  blockCountFor,
  blockLength,
  decodeManifest,
  decodePointer,
  encodeManifest,
  encodePointer,
  type Manifest,
  MANIFEST_MAX_BYTES,
  manifestDigest,
  manifestReadLimit,
  parseImageRef,
  verifyManifestSignature,
} from './manifest.ts';

/** A fixed key: Ed25519 signatures are deterministic, so the bytes are too. */
function fixedKey(): PrivateKey {
  const seed = Buffer.alloc(32, 7);
  const key = createPrivateKey({ key: Buffer.concat([Buffer.from('302e020100300506032b657004220420', 'hex'), seed]), format: 'der', type: 'pkcs8' });
  const der = createPublicKey(key).export({ format: 'der', type: 'spki' });
  return { key, publicKey: publicKeyFromRaw(der.subarray(der.length - 32)) };
}

const A = 'a'.repeat(64);
const B = 'b'.repeat(64);

function sample(key: PrivateKey): Manifest {
  return {
    header: {
      name: 'demo',
      version: 3,
      created: '2026-01-02T03:04:05.000Z',
      imageSize: 4 * 65536 + 100,
      blockSize: 65536,
      blockCount: 5,
      codec: 'zstd',
      filesystem: 'squashfs',
      source: { kind: 'file', name: 'root.sqfs' },
      previous: { version: 2, sha256: 'c'.repeat(64) },
      keyId: key.publicKey.id,
    },
    blocks: [A, null, B, A, B],
    objectSizes: new Map([
      [A, 1234],
      [B, 101],
    ]),
  };
}

const DA = 'd'.repeat(64);
const DB = 'e'.repeat(64);

/** The sample with object digests: what the publisher writes (format 2). */
function sample2(key: PrivateKey): Manifest {
  return { ...sample(key), objectDigests: new Map([[A, DA], [B, DB]]) };
}

describe('manifest', () => {
  const key = fixedKey();

  it('round-trips and verifies', () => {
    const bytes = encodeManifest(sample(key), key);
    const m = decodeManifest(bytes, key.publicKey);
    expect(m.header).toEqual(sample(key).header);
    expect(m.blocks).toEqual([A, null, B, A, B]);
    expect([...m.objectSizes]).toEqual([
      [A, 1234],
      [B, 101],
    ]);
  });

  it('lays out bytes as docs/FORMAT.md says', () => {
    const bytes = encodeManifest(sample(key), key);
    expect(bytes.toString('latin1', 0, 4)).toBe('HFKM');
    expect(bytes.readUInt16LE(4)).toBe(1);
    const h = bytes.readUInt32LE(8);
    expect(JSON.parse(bytes.toString('utf8', 12, 12 + h)).name).toBe('demo');
    let off = 12 + h;
    expect(bytes.readUInt32LE(off)).toBe(2); // unique blocks, in order of first use
    expect(bytes.toString('hex', off + 4, off + 36)).toBe(A);
    expect(bytes.toString('hex', off + 36, off + 68)).toBe(B);
    expect(bytes.readUInt32LE(off + 68)).toBe(1234);
    expect(bytes.readUInt32LE(off + 72)).toBe(101);
    off += 76;
    expect([0, 1, 2, 3, 4].map((i) => bytes.readUInt32LE(off + 4 * i))).toEqual([0, 0xffffffff, 1, 0, 1]);
    expect(bytes.length).toBe(off + 20 + 64);
  });

  it('matches the golden bytes (the format must not drift)', () => {
    const golden = readFileSync(new URL('./testdata/manifest-v1.hex', import.meta.url), 'utf8').trim();
    expect(encodeManifest(sample(key), key).toString('hex')).toBe(golden);
  });

  it('writes format 2 with object digests after the sizes, and reads it back', () => {
    const bytes = encodeManifest(sample2(key), key);
    expect(bytes.readUInt16LE(4)).toBe(2);
    const h = bytes.readUInt32LE(8);
    const off = 12 + h + 4 + 2 * 32 + 2 * 4; // count, hashes, sizes
    expect(bytes.toString('hex', off, off + 32)).toBe(DA);
    expect(bytes.toString('hex', off + 32, off + 64)).toBe(DB);
    expect([0, 1, 2, 3, 4].map((i) => bytes.readUInt32LE(off + 64 + 4 * i))).toEqual([0, 0xffffffff, 1, 0, 1]);
    expect(bytes.length).toBe(off + 64 + 20 + 64);
    const m = decodeManifest(bytes, key.publicKey);
    expect(m.blocks).toEqual([A, null, B, A, B]);
    expect([...m.objectDigests!]).toEqual([
      [A, DA],
      [B, DB],
    ]);
    // format 1 has none
    expect(decodeManifest(encodeManifest(sample(key), key), key.publicKey).objectDigests).toBeUndefined();
  });

  it('matches the golden bytes of format 2', () => {
    const golden = readFileSync(new URL('./testdata/manifest-v2.hex', import.meta.url), 'utf8').trim();
    expect(encodeManifest(sample2(key), key).toString('hex')).toBe(golden);
  });

  it('refuses to write a format-2 manifest with a digest missing', () => {
    const m = { ...sample(key), objectDigests: new Map([[A, DA]]) };
    expect(() => encodeManifest(m, key)).toThrow(new RegExp(`no object digest \\(64 hex digits\\) for block ${B}`));
  });

  it('refuses a format-2 manifest cut short or read as format 1', () => {
    const bytes = encodeManifest(sample2(key), key);
    expect(() => decodeManifest(bytes.subarray(0, bytes.length - 4), null)).toThrow(/block table is/);
    const asV1 = Buffer.from(bytes);
    asV1.writeUInt16LE(1, 4);
    expect(() => decodeManifest(asV1, null)).toThrow(/block table is/);
    expect(() => decodeManifest(asV1, key.publicKey)).toThrow(SignatureError);
  });

  it('refuses a manifest signed by another key, naming both keys', () => {
    const other = parsePublicKey(generateKeyPair().publicLine, 'x');
    const bytes = encodeManifest(sample(key), key);
    expect(() => decodeManifest(bytes, other)).toThrow(SignatureError);
    expect(() => decodeManifest(bytes, other)).toThrow(new RegExp(`signed by key ${key.publicKey.id}, not by the pinned key ${other.id}`));
  });

  it('detects any changed byte', () => {
    const bytes = encodeManifest(sample(key), key);
    for (const at of [20, bytes.length - 100, bytes.length - 70, bytes.length - 1]) {
      const bad = Buffer.from(bytes);
      bad[at]! ^= 1;
      expect(() => decodeManifest(bad, key.publicKey), `byte ${at}`).toThrow(SignatureError);
      expect(() => decodeManifest(bad, key.publicKey), `byte ${at}`).toThrow(/bad signature|not a manifest signed by the pinned key/);
    }
  });

  it('checks the signature before decoding: undecodable bytes under the pinned key are a signature error', () => {
    // Without a key these bytes fail to decode (FormatError); with one, no decode is reached.
    const garbage = Buffer.alloc(4096, 0x5a);
    expect(() => decodeManifest(garbage, null)).toThrow(FormatError);
    expect(() => decodeManifest(garbage, key.publicKey)).toThrow(SignatureError);
    expect(() => decodeManifest(garbage, key.publicKey)).toThrow(/not a manifest signed by the pinned key/);
    // A header that would fail the schema, in a manifest whose signature is bad: still the signature error.
    const bytes = encodeManifest(sample(key), key);
    const bad = Buffer.from(bytes);
    bad.write('{"x":1}', 12, 'utf8');
    expect(() => decodeManifest(bad, null)).toThrow(FormatError);
    expect(() => decodeManifest(bad, key.publicKey)).toThrow(SignatureError);
    expect(() => verifyManifestSignature(bytes, key.publicKey)).not.toThrow();
    expect(() => verifyManifestSignature(Buffer.alloc(10), key.publicKey)).toThrow(SignatureError);
  });

  it('bounds the manifest read by the pointer\'s declared size and an absolute ceiling', () => {
    expect(manifestReadLimit({ version: 3, size: 1234 })).toBe(1234);
    expect(manifestReadLimit(undefined)).toBe(MANIFEST_MAX_BYTES);
    expect(manifestReadLimit({ version: 3, size: MANIFEST_MAX_BYTES })).toBe(MANIFEST_MAX_BYTES);
    expect(() => manifestReadLimit({ version: 99, size: MANIFEST_MAX_BYTES + 1 }, 'the pointer from X')).toThrow(
      /the pointer from X declares a manifest \(v99\) of \d+ bytes, more than hfk accepts/,
    );
  });

  it('reports truncated and malformed manifests as FormatError', () => {
    const bytes = encodeManifest(sample(key), key);
    expect(() => decodeManifest(bytes.subarray(0, 50), null)).toThrow(FormatError);
    expect(() => decodeManifest(bytes.subarray(0, bytes.length - 4), null)).toThrow(/block table is/);
    const wrongMagic = Buffer.from(bytes);
    wrongMagic.write('XXXX', 0, 'latin1');
    expect(() => decodeManifest(wrongMagic, null)).toThrow(/not an hfk manifest/);
    const future = Buffer.from(bytes);
    future.writeUInt16LE(9, 4);
    expect(() => decodeManifest(future, null)).toThrow(/format version 9; this hfk reads versions 1 and 2/);
    const hugeHeader = Buffer.from(bytes);
    hugeHeader.writeUInt32LE(0x7fffffff, 8);
    expect(() => decodeManifest(hugeHeader, null)).toThrow(/header length/);
  });

  it('refuses block indices outside the unique table', () => {
    const m = sample(key);
    const bytes = encodeManifest(m, key);
    const off = bytes.length - 64 - 20; // first index
    const bad = Buffer.from(bytes);
    bad.writeUInt32LE(7, off);
    expect(() => decodeManifest(bad, null)).toThrow(/block 0 refers to unique entry 7 of 2/);
  });

  it('refuses to encode a block list that does not fit the image size', () => {
    const m = sample(key);
    expect(() => encodeManifest({ ...m, blocks: m.blocks.slice(1) }, key)).toThrow(/block list has 4 entries/);
  });

  it('computes block counts and lengths', () => {
    expect(blockCountFor(0, 4096)).toBe(0);
    expect(blockCountFor(4097, 4096)).toBe(2);
    expect(blockLength({ imageSize: 4 * 65536 + 100, blockSize: 65536 }, 4)).toBe(100);
    expect(blockLength({ imageSize: 4 * 65536 + 100, blockSize: 65536 }, 3)).toBe(65536);
  });

  it('digests the whole file', () => {
    const bytes = encodeManifest(sample(key), key);
    expect(manifestDigest(bytes)).toMatch(/^[0-9a-f]{64}$/);
    expect(manifestDigest(bytes)).not.toBe(manifestDigest(bytes.subarray(1)));
  });
});

describe('pointer', () => {
  it('round-trips', () => {
    const p = { format: 'hfk-pointer/1' as const, name: 'demo', version: 4, manifest: 'v4.hfkm', sha256: 'd'.repeat(64), size: 999 };
    expect(decodePointer(encodePointer(p))).toEqual(p);
  });
  it('names what is wrong', () => {
    expect(() => decodePointer(Buffer.from('{'), 'images/x/latest.json')).toThrow(/images\/x\/latest.json is not JSON/);
    expect(() => decodePointer(Buffer.from('{"format":"hfk-pointer/1","name":"x"}'))).toThrow(/not an hfk pointer: .*version/s);
  });
});

describe('image references', () => {
  it.each([
    ['debian', { name: 'debian', version: undefined }],
    ['debian@12', { name: 'debian', version: 12 }],
    ['a.b-c_d@1', { name: 'a.b-c_d', version: 1 }],
  ])('%s', (text, want) => expect(parseImageRef(text, 'hfk.image')).toEqual(want));
  it.each(['', '@3', 'x@', 'x@0', 'x@-1', 'x@1.5', '../etc', 'a/b'])('refuses %j', (text) => {
    expect(() => parseImageRef(text, 'hfk.image')).toThrow(UsageError);
  });
});

describe('boot profiles', () => {
  it('turn block indices into runs and back', async () => {
    const { toRuns, fromRuns } = await import('./manifest.ts');
    expect(toRuns([3, 4, 5, 9, 10, 2])).toEqual([[3, 3], [9, 2], [2, 1]]);
    expect(fromRuns([[3, 3], [9, 2], [2, 1], [4, 2]], 10)).toEqual([3, 4, 5, 9, 2]);
    expect(toRuns([])).toEqual([]);
  });
  it('travel signed in the manifest', () => {
    const key = fixedKey();
    const m = sample(key);
    const withProfile = { ...m, header: { ...m.header, profile: [[2, 3], [0, 1]] as [number, number][] } };
    const back = decodeManifest(encodeManifest(withProfile, key), key.publicKey);
    expect(back.header.profile).toEqual([[2, 3], [0, 1]]);
  });
});
