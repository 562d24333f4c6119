// hfk list: a store's images and their versions. A folder is listed from its
// files (every images/NAME/vN.hfkm); a mirror URL cannot be listed, so its
// versions are the pointer's and then the chain of `previous` versions, each
// checked against the digest the newer one gives. With a key, every
// manifest's signature is checked too. Reads are bounded as a client's are
// (the pointer and manifest limits of format/manifest.ts).

import { MissingError, StoreError, UsageError } from '../errors.ts';
import type { PublicKey } from '../format/keys.ts';
import { IMAGES_DIR, manifestPath } from '../format/layout.ts';
import { type ManifestHeader, verifyManifestSignature } from '../format/manifest.ts';
import { type LoadedManifest, readManifest, readPointer } from '../store/images.ts';
import { LocalStore } from '../store/local.ts';
import type { StoreReader } from '../store/store.ts';

/** The most versions followed back from a mirror's pointer (a forged chain could go on and on). */
export const MAX_CHAIN = 1000;

export interface VersionInfo {
  version: number;
  /** The pointer names this version. */
  latest: boolean;
  /** What the manifest says; absent when it could not be read. */
  header?: Pick<ManifestHeader, 'created' | 'imageSize' | 'blockSize' | 'blockCount' | 'codec' | 'filesystem' | 'keyId' | 'previous'> & { profile: boolean };
  /** Stored bytes of the version's distinct block objects. */
  storedBytes?: number;
  /** The signature checks out with the given key (null: no key given). */
  verified: boolean | null;
  problem?: string;
}

export interface ImageListing {
  name: string;
  /** The version the pointer names, or null when the pointer cannot be read. */
  pointer: number | null;
  /** Newest first. */
  versions: VersionInfo[];
  /** Over HTTP: the chain ends at a version the mirror does not have (removed by hfk gc --keep). */
  olderNotOnMirror?: number;
  problems: string[];
}

export interface StoreListing {
  store: string;
  /** Nothing unreadable, no broken chain, and with a key every manifest verifies. */
  ok: boolean;
  keyId: string | null;
  images: ImageListing[];
}

export interface ListOptions {
  /** Only these images (a URL needs them: HTTP cannot list a folder). */
  names?: readonly string[];
  key: PublicKey | null;
}

const message = (e: unknown) => (e instanceof Error ? e.message : String(e));

function describe(l: LoadedManifest, latest: number | null, key: PublicKey | null, what: string): VersionInfo {
  const h = l.manifest.header;
  let stored = 0;
  for (const s of l.manifest.objectSizes.values()) stored += s;
  const info: VersionInfo = {
    version: h.version,
    latest: h.version === latest,
    header: {
      created: h.created,
      imageSize: h.imageSize,
      blockSize: h.blockSize,
      blockCount: h.blockCount,
      codec: h.codec,
      filesystem: h.filesystem,
      keyId: h.keyId,
      previous: h.previous,
      profile: Boolean(h.profile?.length),
    },
    storedBytes: stored,
    verified: null,
  };
  if (key) {
    try {
      verifyManifestSignature(l.bytes, key, what);
      info.verified = true;
    } catch (e) {
      info.verified = false;
      info.problem = message(e);
    }
  }
  return info;
}

function unreadable(version: number, latest: number | null, key: PublicKey | null, e: unknown): VersionInfo {
  return { version, latest: version === latest, verified: key ? false : null, problem: message(e) };
}

/** A folder: every manifest file, and whether the pointer names one of them with the right digest. */
async function listFolderImage(store: LocalStore, name: string, key: PublicKey | null, only: boolean): Promise<ImageListing> {
  const img: ImageListing = { name, pointer: null, versions: [], problems: [] };
  const versions = await store.listVersions(name);
  try {
    img.pointer = (await readPointer(store, name)).version;
  } catch (e) {
    // Asked for by name and not there at all: that is the answer, as an error.
    if (only && versions.length === 0 && e instanceof MissingError) throw e;
    img.problems.push(message(e));
  }
  for (const v of versions.reverse()) {
    try {
      img.versions.push(describe(await readManifest(store, name, v, null), img.pointer, key, `${manifestPath(name, v)} in ${store.location}`));
    } catch (e) {
      img.versions.push(unreadable(v, img.pointer, key, e));
    }
  }
  if (img.pointer !== null) {
    if (!versions.includes(img.pointer)) img.problems.push(`the pointer of ${name} names v${img.pointer}, which is not in the store`);
    else await readManifest(store, name, undefined, null).catch((e: unknown) => img.problems.push(message(e)));
  }
  return img;
}

/** A URL: the pointer's version, then back along `previous` while the mirror has them. */
async function listUrlImage(store: StoreReader, name: string, key: PublicKey | null): Promise<ImageListing> {
  const pointer = (await readPointer(store, name)).version; // an image the mirror lacks is an error naming it
  const img: ImageListing = { name, pointer, versions: [], problems: [] };
  const what = (v: number) => `${manifestPath(name, v)} on ${store.location}`;
  let cur: LoadedManifest;
  try {
    cur = await readManifest(store, name, undefined, null);
  } catch (e) {
    img.versions.push(unreadable(pointer, pointer, key, e));
    return img;
  }
  img.versions.push(describe(cur, pointer, key, what(pointer)));
  for (let prev = cur.manifest.header.previous; prev; prev = cur.manifest.header.previous) {
    const v = cur.manifest.header.version;
    if (prev.version >= v) {
      img.problems.push(`${what(v)} names v${prev.version} as its previous version, not an older one: the chain stops here`);
      break;
    }
    if (img.versions.length >= MAX_CHAIN) {
      img.problems.push(`stopped after ${MAX_CHAIN} versions; older ones are not listed`);
      break;
    }
    try {
      cur = await readManifest(store, name, prev.version, null);
    } catch (e) {
      if (e instanceof MissingError) img.olderNotOnMirror = prev.version;
      else img.versions.push(unreadable(prev.version, pointer, key, e));
      break;
    }
    const info = describe(cur, pointer, key, what(prev.version));
    img.versions.push(info);
    if (cur.digest !== prev.sha256) {
      img.problems.push(`${what(prev.version)} has SHA-256 ${cur.digest.slice(0, 12)}…, but v${v} names ${prev.sha256.slice(0, 12)}…: not the version it followed; the chain stops here`);
      break;
    }
  }
  return img;
}

export async function listStore(store: StoreReader, o: ListOptions): Promise<StoreListing> {
  const images: ImageListing[] = [];
  if (store instanceof LocalStore) {
    if ((await store.size(IMAGES_DIR)) === undefined) {
      throw new StoreError(`${store.location} is not an hfk store: it has no ${IMAGES_DIR}/ folder`, {
        hint: 'give the folder hfk publish --store wrote into',
      });
    }
    const names = o.names ?? (await store.listImages());
    for (const name of names) images.push(await listFolderImage(store, name, o.key, o.names !== undefined));
  } else {
    if (!o.names?.length) {
      throw new UsageError(`a store at a URL cannot be listed (HTTP has no folder listing): give --name NAME to list ${store.location}`);
    }
    for (const name of o.names) images.push(await listUrlImage(store, name, o.key));
  }
  const ok = images.every((i) => i.problems.length === 0 && i.versions.every((v) => v.problem === undefined));
  return { store: store.location, ok, keyId: o.key?.id ?? null, images };
}
