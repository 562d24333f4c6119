// hfk promote: makes an existing version what clients get, as a signed step
// forward. Clients refuse a version older than one they have seen (rollback
// protection, fetch/trust.ts), so moving the pointer back to v1 would lock out
// every client that has seen v3. Instead a new version (latest + 1) is
// written: the content of the chosen one (same blocks, objects, image,
// profile), `previous` chaining to the current latest, signed with the
// store's key. Then the pointer moves, in the same order as a publish.

import { KeyError, MissingError, SignatureError, StoreError } from '../errors.ts';
import type { PrivateKey } from '../format/keys.ts';
import { blockPath, manifestPath, pointerPath } from '../format/layout.ts';
import { type Manifest, verifyManifestSignature } from '../format/manifest.ts';
import { readManifest } from '../store/images.ts';
import type { StoreWriter } from '../store/store.ts';
import { defaultCreated, nextVersion, sameAsLatest, writeVersion } from './version.ts';

export interface PromoteOptions {
  store: StoreWriter;
  name: string;
  /** The version whose content becomes the latest. */
  version: number;
  key: PrivateKey;
  /** Creation time of the new manifest (default: now, or SOURCE_DATE_EPOCH). */
  created?: Date;
}

export interface PromoteResult {
  name: string;
  /** The latest version has this content already: nothing was written. */
  unchanged: boolean;
  /** The version whose content was promoted. */
  from: number;
  /** The new latest version (the current one when unchanged). */
  version: number;
  /** The version the new one follows (the latest before the promote). */
  previousVersion: number;
  manifest: string;
  manifestSha256: string;
  imageSize: number;
  blocks: number;
}

export async function promote(o: PromoteOptions): Promise<PromoteResult> {
  const where = o.store.location;
  const unlock = await o.store.lock(`promote ${o.name}`);
  try {
    const { latest, version } = await nextVersion(o.store, o.name);
    if (!latest) {
      throw new MissingError(where, `there is no image '${o.name}' in ${where} (no ${pointerPath(o.name)})`, {
        hint: `list the store's images and versions: hfk list ${where}`,
        absent: 'image',
      });
    }
    const current = latest.manifest.header.version;
    // The new version chains to the latest: it must be the same signer's.
    try {
      verifyManifestSignature(latest.bytes, o.key.publicKey, `${manifestPath(o.name, current)} in ${where}`);
    } catch (e) {
      if (!(e instanceof SignatureError)) throw e;
      throw new KeyError(`key ${o.key.publicKey.id} is not the key that signs ${o.name} in ${where}: ${e.message}`, {
        hint: 'promote with the private key that published the image (the PREFIX.key whose PREFIX.pub clients pin)',
        cause: e,
      });
    }
    const target = await readTarget(o, where);
    await checkBlocks(o.store, target);
    const h = target.header;
    const m: Manifest = {
      ...target,
      header: { ...h, version, created: (o.created ?? defaultCreated()).toISOString(), previous: { version: current, sha256: latest.digest } },
    };
    const base = { name: o.name, from: o.version, previousVersion: current, imageSize: h.imageSize, blocks: h.blockCount };
    if (sameAsLatest(m, latest, o.key)) {
      return { ...base, unchanged: true, version: current, previousVersion: latest.manifest.header.previous?.version ?? current, manifest: manifestPath(o.name, current), manifestSha256: latest.digest };
    }
    const out = await writeVersion(o.store, m, o.key);
    return { ...base, unchanged: false, version, manifest: out.manifest, manifestSha256: out.sha256 };
  } finally {
    await unlock();
  }
}

/** The manifest of the version to promote, verified with the key's public half. */
async function readTarget(o: PromoteOptions, where: string): Promise<Manifest> {
  try {
    return (await readManifest(o.store, o.name, o.version, o.key.publicKey)).manifest;
  } catch (e) {
    if (e instanceof MissingError) {
      const versions = await o.store.listVersions(o.name);
      throw new MissingError(where, `image '${o.name}' has no version ${o.version} in ${where}: it has ${versions.map((v) => `v${v}`).join(', ') || 'none'}`, {
        hint: `pick one of those: hfk list ${where}`,
        absent: 'version',
        cause: e,
      });
    }
    if (e instanceof SignatureError) {
      throw new SignatureError(`cannot promote ${o.name} v${o.version}: ${e.message}`, {
        hint: 'only a version signed by this key can be promoted; check the store with hfk verify --store DIR --key PREFIX.pub',
        cause: e,
      });
    }
    throw e;
  }
}

/** Every object the version needs must still be in the store (hfk gc --keep may have removed an old version's). */
async function checkBlocks(store: StoreWriter, m: Manifest): Promise<void> {
  const lacking: string[] = [];
  for (const [hash, size] of m.objectSizes) {
    if ((await store.size(blockPath(hash))) !== size) lacking.push(hash);
  }
  if (lacking.length) {
    throw new StoreError(
      `cannot promote ${m.header.name} v${m.header.version}: ${lacking.length} of its ${m.objectSizes.size} block objects are missing from ${store.location} or have the wrong size (first: ${blockPath(lacking[0]!)})`,
      { hint: `publish that image again instead (hfk publish IMAGE --store ${store.location} --name ${m.header.name} …), or check the store: hfk verify --store ${store.location} --key PREFIX.pub` },
    );
  }
}
