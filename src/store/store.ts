// The one interface every reader of a store implements: a local folder, one
// HTTP origin, or (in the fetcher) a failover group of mirrors. Decorators
// keep this shape, so commands compose them freely.
//
// read() reports failures by kind (src/errors.ts): MissingError (the object
// is not there), BrokenError (transport), InvalidError (bad bytes).

export interface ReadOptions {
  signal?: AbortSignal;
  /** The exact size the object must have, when the caller knows it. */
  expectedSize?: number;
  /** Mutable files (the pointer) must bypass caches that may be stale. */
  fresh?: boolean;
  /** Filled in by network readers: how long the response took. */
  timing?: RequestTiming;
  /**
   * Where a network reader puts the body (default: a buffer of its own),
   * e.g. a pool the caller gives the memory back to.
   */
  alloc?: (size: number) => Buffer;
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

/** A store location as typed by the user: a URL or a folder. */
export function isUrl(location: string): boolean {
  return /^https?:\/\//i.test(location);
}
