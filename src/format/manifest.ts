// The manifest: one signed file per version of an image. Layout (all
// integers little-endian), documented in docs/FORMAT.md:
//
//   0    4   magic "HFKM"
//   4    2   format version (1 or 2)
//   6    2   reserved, 0
//   8    4   header length H
//   12   H   header, UTF-8 JSON (ManifestHeader)
//   .    4   number of unique blocks U
//   .    32U SHA-256 of each unique block, in order of first use
//   .    4U  size in bytes of each unique block's stored object
//   .    32U SHA-256 of each unique block's stored object (format 2 only)
//   .    4N  per block (N = header.blockCount): index into the unique table,
//            0xFFFFFFFF for an all-zero block (no object)
//   .    64  Ed25519 signature over every byte before it

import { createHash } from 'node:crypto';
import { z } from 'zod';
import { FormatError, SignatureError, UsageError } from '../errors.ts';
import { Codec, isValidBlockSize } from './codec.ts';
import { Filesystem } from './fstype.ts';
import { type PrivateKey, type PublicKey, signBytes, verifyBytes } from './keys.ts';

export const MANIFEST_MAGIC = 'HFKM';
/** The format this hfk writes; it reads this one and format 1 (no object digests). */
export const MANIFEST_FORMAT_VERSION = 2;
export const ZERO_INDEX = 0xffffffff;
const SIGNATURE_BYTES = 64;
const HASH_BYTES = 32;
/** Refuse absurd headers before parsing them. */
const MAX_HEADER_BYTES = 64 * 1024;

export const ImageName = z
  .string()
  .regex(/^[A-Za-z0-9][A-Za-z0-9._-]{0,63}$/, 'an image name is 1-64 letters, digits, dots, dashes or underscores, starting with a letter or digit');

export const Sha256Hex = z.string().regex(/^[0-9a-f]{64}$/, 'a SHA-256 is 64 lower-case hex digits');

/** Runs of block indices [first, count], in the order a boot first read them. */
export const BootProfile = z.array(z.tuple([z.number().int().nonnegative(), z.number().int().positive()])).max(1_000_000);
export type BootProfile = z.infer<typeof BootProfile>;

/** Block indices as runs, in order: [3,4,5,9] → [[3,3],[9,1]]. */
export function toRuns(indices: Iterable<number>): BootProfile {
  const runs: [number, number][] = [];
  for (const i of indices) {
    const last = runs[runs.length - 1];
    if (last && last[0] + last[1] === i) last[1]++;
    else runs.push([i, 1]);
  }
  return runs;
}

/** The block indices of runs, in order, dropping any at or past `blockCount` and repeats. */
export function fromRuns(runs: BootProfile, blockCount: number): number[] {
  const seen = new Set<number>();
  const out: number[] = [];
  for (const [first, count] of runs) {
    for (let i = first; i < first + count && i < blockCount; i++) {
      if (!seen.has(i)) {
        seen.add(i);
        out.push(i);
      }
    }
  }
  return out;
}

export const ManifestHeader = z.strictObject({
  name: ImageName,
  version: z.number().int().positive(),
  created: z.iso.datetime(),
  imageSize: z.number().int().nonnegative(),
  blockSize: z.number().int().refine(isValidBlockSize, 'block size must be a power of two from 4 KiB to 1 MiB'),
  blockCount: z.number().int().nonnegative(),
  codec: Codec,
  filesystem: Filesystem,
  source: z.strictObject({ kind: z.enum(['file', 'blockdev', 'cloop']), name: z.string() }),
  previous: z.strictObject({ version: z.number().int().positive(), sha256: Sha256Hex }).nullable(),
  keyId: z.string().regex(/^[0-9a-f]{16}$/),
  /**
   * Optional boot profile: the blocks a boot of this image reads, in the
   * order it first reads them, as runs [first block, count]. A reader
   * prefetches them at mount, so the boot finds them already fetched.
   */
  profile: BootProfile.optional(),
});
export type ManifestHeader = z.infer<typeof ManifestHeader>;

export interface Manifest {
  readonly header: ManifestHeader;
  /** Per block: its SHA-256 (hex), or null for an all-zero block. */
  readonly blocks: readonly (string | null)[];
  /** Stored object size for every distinct block hash. */
  readonly objectSizes: ReadonlyMap<string, number>;
  /**
   * SHA-256 (hex) of every distinct block's stored object (format 2): a
   * reader that receives an object with this digest only decodes it, instead
   * of hashing the decoded block (see decodeChecked in codec.ts). Absent in
   * a format-1 manifest; a manifest encoded without it is written as format 1.
   */
  readonly objectDigests?: ReadonlyMap<string, string>;
}

export function blockCountFor(imageSize: number, blockSize: number): number {
  return Math.ceil(imageSize / blockSize);
}

/** Length of block i (the last one may be short). */
export function blockLength(header: Pick<ManifestHeader, 'imageSize' | 'blockSize'>, index: number): number {
  return Math.min(header.blockSize, header.imageSize - index * header.blockSize);
}

export function manifestDigest(bytes: Uint8Array): string {
  return createHash('sha256').update(bytes).digest('hex');
}

export function encodeManifest(m: Manifest, key: PrivateKey): Buffer {
  const header = ManifestHeader.parse(m.header);
  if (header.keyId !== key.publicKey.id) {
    throw new FormatError(`manifest says key ${header.keyId} but is being signed with key ${key.publicKey.id}`);
  }
  if (m.blocks.length !== header.blockCount || header.blockCount !== blockCountFor(header.imageSize, header.blockSize)) {
    throw new FormatError(
      `manifest block list has ${m.blocks.length} entries; an image of ${header.imageSize} bytes in ${header.blockSize}-byte blocks has ${blockCountFor(header.imageSize, header.blockSize)}`,
    );
  }
  const order = new Map<string, number>();
  const indices = new Uint32Array(m.blocks.length);
  m.blocks.forEach((h, i) => {
    if (h === null) {
      indices[i] = ZERO_INDEX;
      return;
    }
    let idx = order.get(h);
    if (idx === undefined) {
      idx = order.size;
      order.set(h, idx);
    }
    indices[i] = idx;
  });
  const headerBytes = Buffer.from(JSON.stringify(header), 'utf8');
  const u = order.size;
  const digests = m.objectDigests;
  const size = 12 + headerBytes.length + 4 + u * (HASH_BYTES + 4 + (digests ? HASH_BYTES : 0)) + indices.length * 4 + SIGNATURE_BYTES;
  const out = Buffer.alloc(size);
  out.write(MANIFEST_MAGIC, 0, 'latin1');
  out.writeUInt16LE(digests ? 2 : 1, 4);
  out.writeUInt32LE(headerBytes.length, 8);
  headerBytes.copy(out, 12);
  let off = 12 + headerBytes.length;
  out.writeUInt32LE(u, off);
  off += 4;
  for (const h of order.keys()) {
    if (!/^[0-9a-f]{64}$/.test(h)) throw new FormatError(`block hash '${h}' is not 64 hex digits`);
    out.write(h, off, 'hex');
    off += HASH_BYTES;
  }
  for (const h of order.keys()) {
    const s = m.objectSizes.get(h);
    if (s === undefined) throw new FormatError(`no object size for block ${h}`);
    out.writeUInt32LE(s, off);
    off += 4;
  }
  if (digests) {
    for (const h of order.keys()) {
      const d = digests.get(h);
      if (d === undefined || !/^[0-9a-f]{64}$/.test(d)) throw new FormatError(`no object digest (64 hex digits) for block ${h}: got ${d}`);
      out.write(d, off, 'hex');
      off += HASH_BYTES;
    }
  }
  for (const idx of indices) {
    out.writeUInt32LE(idx, off);
    off += 4;
  }
  signBytes(key, out.subarray(0, off)).copy(out, off);
  return out;
}

/**
 * Checks a manifest's signature on its raw bytes, before any of them is
 * parsed: an unsigned manifest costs one hash over its bytes, never a decode.
 * SignatureError when the bytes are not signed by `key`.
 */
export function verifyManifestSignature(bytes: Buffer, key: PublicKey, what = 'manifest'): void {
  if (bytes.length > SIGNATURE_BYTES && verifyBytes(key, bytes.subarray(0, bytes.length - SIGNATURE_BYTES), bytes.subarray(bytes.length - SIGNATURE_BYTES))) return;
  const claim = peekSigner(bytes);
  if (!claim) {
    throw new SignatureError(`${what} is not a manifest signed by the pinned key ${key.id} (${bytes.length} bytes that are not an hfk manifest, or are damaged)`, {
      hint: 'the mirror or a proxy serves something else than the image\'s manifest; try another mirror',
    });
  }
  const which = `${what} (${claim.name} v${claim.version})`;
  if (claim.keyId !== key.id) {
    throw new SignatureError(`${which} is signed by key ${claim.keyId}, not by the pinned key ${key.id}`, {
      hint: 'pin the publisher\'s public key (its PREFIX.pub), or check that the mirror serves the image you meant',
    });
  }
  throw new SignatureError(`${which} has a bad signature: its bytes were changed after signing`, {
    hint: 'the mirror or a proxy serves a damaged or forged manifest; try another mirror',
  });
}

/**
 * What an unverified manifest's header says of itself (name, version, key
 * id), only to explain why its signature fails; the header is at most
 * MAX_HEADER_BYTES, so this look is bounded whatever the file's size.
 */
function peekSigner(bytes: Buffer): { name: string; version: string; keyId: string } | undefined {
  if (bytes.length < 12 || bytes.toString('latin1', 0, 4) !== MANIFEST_MAGIC) return undefined;
  const hlen = bytes.readUInt32LE(8);
  if (hlen > MAX_HEADER_BYTES || 12 + hlen > bytes.length) return undefined;
  try {
    const h = JSON.parse(bytes.toString('utf8', 12, 12 + hlen)) as Record<string, unknown>;
    const text = (v: unknown) => (typeof v === 'string' || typeof v === 'number' ? String(v).slice(0, 80) : '?');
    return h && typeof h === 'object' ? { name: text(h.name), version: text(h.version), keyId: text(h.keyId) } : undefined;
  } catch {
    return undefined;
  }
}

/**
 * Parses and checks a manifest. With `key`, the signature must verify
 * (SignatureError otherwise), and is checked before anything is parsed;
 * without it, the caller only wants to look at bytes it trusts already (its
 * own store).
 */
export function decodeManifest(bytes: Buffer, key: PublicKey | null, what = 'manifest'): Manifest {
  if (key) verifyManifestSignature(bytes, key, what);
  const fail = (why: string): never => {
    throw new FormatError(`${what} is corrupt: ${why}`);
  };
  if (bytes.length < 12 + 2 + 4 + SIGNATURE_BYTES) fail(`only ${bytes.length} bytes`);
  if (bytes.toString('latin1', 0, 4) !== MANIFEST_MAGIC) fail('it does not start with "HFKM" (not an hfk manifest)');
  const fv = bytes.readUInt16LE(4);
  if (fv !== 1 && fv !== 2) {
    throw new FormatError(`${what} has format version ${fv}; this hfk reads versions 1 and ${MANIFEST_FORMAT_VERSION}`, {
      hint: 'upgrade hfk on this machine',
    });
  }
  const hlen = bytes.readUInt32LE(8);
  if (hlen > MAX_HEADER_BYTES || 12 + hlen + 4 > bytes.length - SIGNATURE_BYTES) fail(`header length ${hlen} is out of range`);
  const body = bytes.subarray(0, bytes.length - SIGNATURE_BYTES);
  let json: unknown;
  try {
    json = JSON.parse(bytes.toString('utf8', 12, 12 + hlen));
  } catch (e) {
    fail(`header is not JSON (${(e as Error).message})`);
  }
  const parsed = ManifestHeader.safeParse(json);
  if (!parsed.success) fail(`header: ${z.prettifyError(parsed.error).replace(/\n/g, '; ')}`);
  const header = parsed.data!;
  if (key && header.keyId !== key.id) {
    // Signed by the pinned key, yet naming another: the publisher's mistake, not a forgery.
    fail(`its header names key ${header.keyId}, but it is signed by the pinned key ${key.id}`);
  }
  if (header.blockCount !== blockCountFor(header.imageSize, header.blockSize)) {
    fail(`blockCount ${header.blockCount} does not match imageSize ${header.imageSize} / blockSize ${header.blockSize}`);
  }
  let off = 12 + hlen;
  const u = body.readUInt32LE(off);
  off += 4;
  const need = u * (HASH_BYTES + 4 + (fv === 2 ? HASH_BYTES : 0)) + header.blockCount * 4;
  if (off + need !== body.length) fail(`block table is ${body.length - off} bytes, expected ${need}`);
  if (u > header.blockCount) fail(`${u} unique blocks in an image of ${header.blockCount} blocks`);
  const hashes: string[] = new Array(u);
  for (let i = 0; i < u; i++, off += HASH_BYTES) hashes[i] = body.toString('hex', off, off + HASH_BYTES);
  const objectSizes = new Map<string, number>();
  for (let i = 0; i < u; i++, off += 4) {
    const s = body.readUInt32LE(off);
    if (s === 0 || s > header.blockSize + 1) fail(`object size ${s} of block ${hashes[i]} is out of range`);
    if (objectSizes.has(hashes[i]!)) fail(`block ${hashes[i]} is listed twice in the unique table`);
    objectSizes.set(hashes[i]!, s);
  }
  let objectDigests: Map<string, string> | undefined;
  if (fv === 2) {
    objectDigests = new Map();
    for (let i = 0; i < u; i++, off += HASH_BYTES) objectDigests.set(hashes[i]!, body.toString('hex', off, off + HASH_BYTES));
  }
  const blocks: (string | null)[] = new Array(header.blockCount);
  for (let i = 0; i < header.blockCount; i++, off += 4) {
    const idx = body.readUInt32LE(off);
    if (idx === ZERO_INDEX) blocks[i] = null;
    else if (idx < u) blocks[i] = hashes[idx]!;
    else fail(`block ${i} refers to unique entry ${idx} of ${u}`);
  }
  return { header, blocks, objectSizes, ...(objectDigests ? { objectDigests } : {}) };
}

// The pointer: the one mutable file per image, naming its latest manifest.

export const POINTER_FORMAT = 'hfk-pointer/1';
export const Pointer = z.strictObject({
  format: z.literal(POINTER_FORMAT),
  name: ImageName,
  version: z.number().int().positive(),
  manifest: z.string().regex(/^v[1-9][0-9]*\.hfkm$/),
  sha256: Sha256Hex,
  size: z.number().int().positive(),
});
export type Pointer = z.infer<typeof Pointer>;

export function encodePointer(p: Pointer): Buffer {
  return Buffer.from(`${JSON.stringify(Pointer.parse(p), null, 1)}\n`, 'utf8');
}

/** The largest pointer file a reader accepts (one is a few hundred bytes of JSON). */
export const POINTER_MAX_BYTES = 64 * 1024;

/**
 * The largest manifest a reader accepts, whatever a pointer declares: 4
 * bytes per block plus 72 per distinct block, so an image of about 900,000
 * blocks (58 GiB in 64 KiB blocks).
 */
export const MANIFEST_MAX_BYTES = 64 * 1024 * 1024;

/**
 * How many bytes reading the manifest a pointer names may take: the size the
 * pointer declares (no pointer, as for a pinned NAME@VERSION: the ceiling).
 * A pointer declaring more than the ceiling is refused before any read.
 */
export function manifestReadLimit(p: Pick<Pointer, 'size' | 'version'> | undefined, what = 'pointer'): number {
  if (!p) return MANIFEST_MAX_BYTES;
  if (p.size > MANIFEST_MAX_BYTES) {
    throw new FormatError(`${what} declares a manifest (v${p.version}) of ${p.size} bytes, more than hfk accepts (${MANIFEST_MAX_BYTES} bytes)`, {
      hint: 'the mirror serves a damaged or forged pointer; try another mirror',
    });
  }
  return p.size;
}

export function decodePointer(bytes: Buffer, what = 'pointer'): Pointer {
  let json: unknown;
  try {
    json = JSON.parse(bytes.toString('utf8'));
  } catch (e) {
    throw new FormatError(`${what} is not JSON: ${(e as Error).message}`);
  }
  const r = Pointer.safeParse(json);
  if (!r.success) throw new FormatError(`${what} is not an hfk pointer: ${z.prettifyError(r.error).replace(/\n/g, '; ')}`);
  return r.data;
}

/** Parses `NAME` or `NAME@VERSION`; `what` names the argument for errors. */
export function parseImageRef(text: string, what: string): { name: string; version: number | undefined } {
  const at = text.lastIndexOf('@');
  const name = at < 0 ? text : text.slice(0, at);
  const vtext = at < 0 ? undefined : text.slice(at + 1);
  if (!ImageName.safeParse(name).success) {
    throw new UsageError(`${what} must be NAME or NAME@VERSION with NAME of letters, digits, '.', '-', '_': got '${text}'`);
  }
  if (vtext === undefined) return { name, version: undefined };
  if (!/^[1-9][0-9]{0,9}$/.test(vtext)) {
    throw new UsageError(`${what}: the version after '@' must be a positive whole number: got '${vtext}'`);
  }
  return { name, version: Number(vtext) };
}
