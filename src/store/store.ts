// The interfaces of a store's clients: StoreReader reads files of the
// store's layout by path (a local folder, one HTTP origin); StoreWriter is
// what the publisher and gc write through (a local folder). Blocks by digest,
// verified, come from the block-source layer (src/source/) on top of readers.
//
// read() reports failures by kind (src/errors.ts): MissingError (the object
// is not there), BrokenError (transport), InvalidError (bad bytes).

export interface ReadOptions {
  signal?: AbortSignal;
  /** The exact size the object must have, when the caller knows it. */
  expectedSize?: number | undefined;
  /** The most bytes a file of unknown size may have (a pointer, a mirror list): more is an InvalidError, found as the bytes come. */
  maxBytes?: number | undefined;
  /** Mutable files (the pointer) must bypass caches that may be stale. */
  fresh?: boolean;
  /** Filled in by network readers: how long the response took. */
  timing?: RequestTiming;
  /**
   * Where a network reader puts the body (default: a buffer of its own),
   * e.g. a pool the caller gives the memory back to.
   */
  alloc?: (size: number) => Buffer;
  /** Between the clients only: the URLs a read was redirected through so far, the first one first. */
  redirects?: readonly string[];
}

export interface RequestTiming {
  /** From sending the request to the response headers. */
  ttfbMs: number;
  /** From the headers to the last body byte. */
  bodyMs: number;
}

export interface StoreReader {
  /** Where this store is, for messages (a path or a URL). */
  readonly location: string;
  read(relPath: string, options?: ReadOptions): Promise<Buffer>;
  close(): Promise<void>;
}

export interface WriteOptions {
  /** fsync the file (and its folder) before it counts as written: manifests and pointers. */
  fsync?: boolean;
}

/** A store that can be written: every file appears whole or not at all. */
export interface StoreWriter extends StoreReader {
  /** The store's folder: the publisher's worker threads write block objects into its layout directly. */
  readonly root: string;
  write(rel: string, data: Uint8Array, options?: WriteOptions): Promise<void>;
  /** A file's size, or undefined when it does not exist. */
  size(rel: string): Promise<number | undefined>;
  remove(rel: string): Promise<void>;
  listImages(): Promise<string[]>;
  /** Versions with a manifest, ascending. */
  listVersions(name: string): Promise<number[]>;
  /** Every block object, and every leftover temporary file. */
  listBlockFiles(): Promise<{ hashes: string[]; temporaries: string[] }>;
  /** Takes the store-wide writer lock; resolves to its release. */
  lock(purpose: string): Promise<() => Promise<void>>;
}

/** A store location as typed by the user: a URL or a folder. */
export function isUrl(location: string): boolean {
  return /^https?:\/\//i.test(location);
}
