// One new version of an image, as hfk publish and hfk promote both make it:
// the number that follows the latest, the test whether it would change
// anything at all, and the write order that keeps readers safe (the signed
// manifest is fsynced and renamed into place, then the pointer).

import { MissingError } from '../errors.ts';
import type { PrivateKey } from '../format/keys.ts';
import { manifestFile, manifestPath, pointerPath } from '../format/layout.ts';
import { encodeManifest, encodePointer, type Manifest, manifestDigest } from '../format/manifest.ts';
import { type LoadedManifest, readManifest } from '../store/images.ts';
import type { StoreWriter } from '../store/store.ts';

export interface NextVersion {
  /** The manifest the pointer names now (unverified: the store is the caller's own), or null for a new image. */
  latest: LoadedManifest | null;
  /** The number the new version gets: one past every version the store has or the pointer names. */
  version: number;
}

/** The latest version of `name` and the number of the one to write next. Call it holding the store lock. */
export async function nextVersion(store: StoreWriter, name: string): Promise<NextVersion> {
  let latest: LoadedManifest | null = null;
  try {
    latest = await readManifest(store, name, undefined, null);
  } catch (e) {
    if (!(e instanceof MissingError)) throw e;
  }
  const versions = await store.listVersions(name);
  return { latest, version: Math.max(latest?.manifest.header.version ?? 0, ...versions, 0) + 1 };
}

/** The creation time of a new manifest: now, or SOURCE_DATE_EPOCH for reproducible builds. */
export function defaultCreated(): Date {
  const epoch = process.env.SOURCE_DATE_EPOCH;
  if (epoch && /^\d+$/.test(epoch)) return new Date(Number(epoch) * 1000);
  return new Date();
}

/**
 * Whether `m`, signed with `key`, would give clients exactly what `latest`
 * gives: the same blocks, objects, sizes, codec, filesystem, profile and
 * signing key. Only the version, date, `previous` link and the name of the
 * file it was cut from may differ. Ed25519 signatures are deterministic, so
 * the manifest encoded with the latest's values for those fields is
 * byte-identical to the latest exactly when nothing else differs.
 */
export function sameAsLatest(m: Manifest, latest: LoadedManifest, key: PrivateKey): boolean {
  const h = latest.manifest.header;
  const probe = encodeManifest({ ...m, header: { ...m.header, version: h.version, created: h.created, previous: h.previous, source: h.source } }, key);
  return probe.equals(latest.bytes);
}

export interface WrittenVersion {
  /** The manifest's path in the store. */
  manifest: string;
  sha256: string;
  bytes: number;
}

/**
 * Signs and writes a manifest, then moves the pointer to it; each file is
 * fsynced and renamed into place, so a reader sees the old pointer or the
 * new one, and the new one only once its manifest is there. If the pointer
 * cannot be written, the manifest is removed again.
 */
export async function writeVersion(store: StoreWriter, m: Manifest, key: PrivateKey): Promise<WrittenVersion> {
  const { name, version } = m.header;
  const bytes = encodeManifest(m, key);
  const sha256 = manifestDigest(bytes);
  const rel = manifestPath(name, version);
  await store.write(rel, bytes, { fsync: true });
  try {
    await store.write(pointerPath(name), encodePointer({ format: 'hfk-pointer/1', name, version, manifest: manifestFile(version), sha256, size: bytes.length }), { fsync: true });
  } catch (e) {
    await store.remove(rel).catch(() => {});
    throw e;
  }
  return { manifest: rel, sha256, bytes: bytes.length };
}
