// The small filesystem API the protocol layer (protocol.ts) calls: what a
// read-only FUSE filesystem implements, in Node-friendly types. Node ids are
// plain numbers (the kernel's root is 1); times are milliseconds since the
// epoch; cache timeouts are milliseconds. Methods may return a value or a
// promise. To fail with a particular errno, throw `FuseErrnoError`
// (errors.ts); anything else becomes EIO (see `errnoOf` in protocol.ts).

/** The node id the kernel uses for the root of the mount. */
export const ROOT_ID = 1;

/** File type bits of `Attr.mode` (the S_IF* values). */
export const S_IFMT = 0o170000;
export const S_IFDIR = 0o040000;
export const S_IFREG = 0o100000;
export const S_IFLNK = 0o120000;

/** What stat(2) shows for a node. */
export interface Attr {
  /** Node id (also shown as st_ino). */
  ino: number;
  /** Type and permission bits, e.g. S_IFREG | 0o444. */
  mode: number;
  size: number;
  nlink: number;
  uid: number;
  gid: number;
  /** Modification time, ms since the epoch; also used for atime and ctime. */
  mtimeMs: number;
  /** Preferred I/O size for st_blksize; 0 lets the kernel choose (4096). */
  blksize?: number;
}

/** A name resolved in a directory, with how long the kernel may cache it. */
export interface Entry {
  attr: Attr;
  /** How long the kernel may keep the name → node mapping. */
  entryTimeoutMs: number;
  /** How long the kernel may keep the attributes. */
  attrTimeoutMs: number;
}

/** Attributes with their cache timeout (getattr's answer). */
export interface AttrReply {
  attr: Attr;
  attrTimeoutMs: number;
}

/** How an open file or directory behaves in the kernel's caches. */
export interface OpenReply {
  /** A handle passed back to read/readdir/release; 0 when unused. */
  fh?: number;
  /** Bypass the page cache: every read reaches the filesystem (content that changes). */
  directIo?: boolean;
  /** Keep cached pages from earlier opens (immutable content). */
  keepCache?: boolean;
  /** Let the kernel cache directory listings (opendir only). */
  cacheDir?: boolean;
}

/** One directory entry; the protocol layer adds "." and "..". */
export interface DirEntry {
  name: string;
  ino: number;
  /** The S_IF* type bits of the entry's mode. */
  type: number;
}

/** What statfs(2) shows. */
export interface StatFs {
  /** Total blocks of `bsize` bytes. */
  blocks: number;
  bfree: number;
  bavail: number;
  files: number;
  ffree: number;
  bsize: number;
  namelen: number;
}

/** Who asks, as the kernel reports it. */
export interface RequestContext {
  uid: number;
  gid: number;
  pid: number;
}

export interface FileSystem {
  /**
   * How long the kernel may remember that a name does not exist (lookup
   * gave undefined), ms. Default 0: answered ENOENT, not cached. An
   * immutable tree can let the kernel keep negative entries for long.
   */
  readonly negativeTimeoutMs?: number;
  /** Resolves `name` in directory `parent`; `undefined` means it does not exist. */
  lookup(parent: number, name: string, ctx: RequestContext): Entry | undefined | Promise<Entry | undefined>;
  /** Attributes of a node; `fh` is set when the kernel asks about an open file (fstat). */
  getattr(ino: number, fh: number | undefined, ctx: RequestContext): AttrReply | Promise<AttrReply>;
  /** Opens a regular file for reading (flags are the open(2) flags). */
  open(ino: number, flags: number, ctx: RequestContext): OpenReply | Promise<OpenReply>;
  /**
   * Bytes [offset, offset+size) of a file; shorter only at end of file.
   * `signal` aborts when the kernel interrupts the request.
   */
  read(ino: number, offset: number, size: number, signal: AbortSignal, fh: number): Buffer | Promise<Buffer>;
  /**
   * Optional fast path for `read`: fill `dest` (its length is the size asked)
   * with the bytes at `offset` and resolve with how many were read (fewer
   * only at end of file). When present the protocol layer uses it instead of
   * `read`, with large buffers it reuses once the reply is written: no fresh
   * memory per READ. `dest` must not be kept after the promise settles.
   */
  readInto?(ino: number, offset: number, dest: Buffer, signal: AbortSignal, fh: number): Promise<number>;
  /** The file is closed for good (last close of that open). */
  release?(ino: number, fh: number): void | Promise<void>;
  /** Opens a directory; without it directories open with fh 0 and no caching. */
  opendir?(ino: number, ctx: RequestContext): OpenReply | Promise<OpenReply>;
  /** Every entry of a directory except "." and ".."; the protocol layer pages through them. */
  readdir(ino: number, fh: number, ctx: RequestContext): DirEntry[] | Promise<DirEntry[]>;
  releasedir?(ino: number, fh: number): void | Promise<void>;
  statfs(ino: number): StatFs | Promise<StatFs>;
  /** Target of a symbolic link. */
  readlink?(ino: number): string | Promise<string>;
  /** Value of one extended attribute; `undefined` means it does not exist (ENODATA). */
  getxattr?(ino: number, name: string): Buffer | undefined | Promise<Buffer | undefined>;
  /** Names of the extended attributes of a node. */
  listxattr?(ino: number): string[] | Promise<string[]>;
  /** The kernel dropped `nlookup` references to a node (lookup counting, optional). */
  forget?(ino: number, nlookup: number): void;
  /** The connection is going away. */
  destroy?(): void;
}
