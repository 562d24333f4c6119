// Reading images out of any StoreReader: the pointer, signed manifests and
// verified blocks. Verification happens here, at the boundary: a block
// leaves this module hash-checked, or not at all.

import { BlockDecodeError, type Checked, decodeChecked, objectDigest } from '../format/codec.ts';
import { InvalidError, MissingError } from '../errors.ts';
import type { PublicKey } from '../format/keys.ts';
import { blockPath, manifestPath, pointerPath } from '../format/layout.ts';
import {
  decodeManifest,
  decodePointer,
  type Manifest,
  manifestDigest,
  manifestReadLimit,
  type Pointer,
  POINTER_MAX_BYTES,
} from '../format/manifest.ts';
import type { ReadOptions, StoreReader } from './store.ts';

export async function readPointer(store: StoreReader, name: string, options: ReadOptions = {}): Promise<Pointer> {
  let bytes: Buffer;
  try {
    bytes = await store.read(pointerPath(name), { ...options, fresh: true, maxBytes: POINTER_MAX_BYTES });
  } catch (e) {
    if (e instanceof MissingError) {
      throw new MissingError(e.source, `there is no image '${name}' in ${store.location} (no ${pointerPath(name)})`, {
        hint: 'check the image name (hfk.image= / --name) and the mirror URL',
        cause: e,
        absent: 'image',
      });
    }
    throw e;
  }
  const p = decodePointer(bytes, `${pointerPath(name)} in ${store.location}`);
  if (p.name !== name) throw new InvalidError(store.location, `${pointerPath(name)} names image '${p.name}', not '${name}'`);
  return p;
}

export interface LoadedManifest {
  manifest: Manifest;
  bytes: Buffer;
  digest: string;
}

/**
 * Reads one manifest (the latest if `version` is undefined) and checks it:
 * signature against `key` (when given), name and version, and the digest
 * the pointer promised. `known`: manifest bytes already fetched, by store
 * path; used instead of a fetch when the pointer names exactly them.
 */
export async function readManifest(
  store: StoreReader,
  name: string,
  version: number | undefined,
  key: PublicKey | null,
  options: ReadOptions = {},
  known?: ReadonlyMap<string, Buffer>,
): Promise<LoadedManifest> {
  let expectDigest: string | undefined;
  let v = version;
  // At most what the pointer declares (without a pointer: the absolute ceiling), enforced as bytes arrive.
  let maxBytes = manifestReadLimit(undefined);
  if (v === undefined) {
    const p = await readPointer(store, name, options);
    v = p.version;
    expectDigest = p.sha256;
    maxBytes = manifestReadLimit(p, `${pointerPath(name)} in ${store.location}`);
  }
  const rel = manifestPath(name, v);
  let bytes: Buffer;
  // The same manifest fetched a moment ago (the mirror ranking's `known`
  // bytes): used when the pointer names exactly those bytes.
  const have = expectDigest !== undefined ? known?.get(rel) : undefined;
  const haveDigest = have && manifestDigest(have);
  try {
    bytes = have && haveDigest === expectDigest ? have : await store.read(rel, { ...options, maxBytes });
  } catch (e) {
    if (e instanceof MissingError) {
      throw new MissingError(e.source, `image '${name}' has no version ${v} in ${store.location} (no ${rel})`, {
        hint: version === undefined ? 'the store is being published or was pruned; try again' : `list the versions the store has: hfk verify --store … --name ${name} --key PREFIX.pub`,
        cause: e,
        absent: 'version',
      });
    }
    throw e;
  }
  const digest = bytes === have ? haveDigest! : manifestDigest(bytes);
  if (expectDigest !== undefined && digest !== expectDigest) {
    throw new InvalidError(store.location, `${rel} in ${store.location} has SHA-256 ${digest.slice(0, 12)}…, the pointer says ${expectDigest.slice(0, 12)}…`);
  }
  const manifest = decodeManifest(bytes, key, `${rel} in ${store.location}`);
  if (manifest.header.name !== name || manifest.header.version !== v) {
    throw new InvalidError(
      store.location,
      `${rel} in ${store.location} describes ${manifest.header.name} v${manifest.header.version}, not ${name} v${v}`,
    );
  }
  return { manifest, bytes, digest };
}

/**
 * Verifies an object's bytes against its name (or the object digest the
 * signed manifest gives: see decodeChecked) and decodes them. Throws
 * InvalidError (naming `source`) for anything that does not check out.
 * Decoding runs synchronously: for one block, node:zlib's async path costs
 * more in bookkeeping than the decompression itself.
 */
export async function verifyObject(source: string, hash: string, object: Buffer, length: number, digest?: string, out?: Buffer): Promise<Buffer> {
  let r: Checked;
  try {
    r = decodeChecked(object, length, hash, digest, out);
  } catch (e) {
    if (e instanceof BlockDecodeError) throw new InvalidError(source, `block ${hash.slice(0, 12)}… from ${source}: ${e.message}`);
    throw e;
  }
  if (!r.ok) {
    throw new InvalidError(source, `block ${hash.slice(0, 12)}… from ${source} has content hash ${r.actual.slice(0, 12)}…: corrupt or forged`);
  }
  return r.data;
}

/**
 * Reads and verifies one block object from a store, strictly (hfk verify):
 * the decoded block must hash to its name, and with `digest` (the manifest's
 * object digest) the object must also be the very one the manifest signs.
 */
export async function readBlock(
  store: StoreReader,
  hash: string,
  length: number,
  objectSize: number | undefined,
  options: ReadOptions = {},
  digest?: string,
): Promise<Buffer> {
  const object = await store.read(blockPath(hash), { ...options, ...(objectSize === undefined ? {} : { expectedSize: objectSize }) });
  const data = await verifyObject(store.location, hash, object, length);
  const actual = digest === undefined ? undefined : objectDigest(object);
  if (actual !== undefined && actual !== digest) {
    throw new InvalidError(
      store.location,
      `block ${hash.slice(0, 12)}… from ${store.location} decodes correctly, but its object has SHA-256 ${actual.slice(0, 12)}…, not the ${digest!.slice(0, 12)}… the manifest signs: readers then hash the whole block to accept it`,
      { hint: 'copy the object from the publisher\'s store again, or republish the image from this store' },
    );
  }
  return data;
}
