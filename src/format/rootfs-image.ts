// What the filesystem readers of rootfs.ts (squashfs, ext4, erofs) share:
// the bounded view of the image they read through, and the node and volume
// each one returns. Types only, so that the readers and rootfs.ts import it
// without a cycle.

export type PathKind = 'file' | 'dir' | 'symlink' | 'other';

/** The image as a reader sees it: every read bounded by its declared size. */
export interface Image {
  readonly size: number;
  /** The size the filesystem declares for itself (reads past it are damage). */
  declareSize(bytes: number, what: string): void;
  at(offset: number, length: number, what: string): Promise<Buffer>;
  /** A FormatError naming the structure and what was found. */
  damaged(structure: string, found: string): Error;
  /** An UnsupportedFormatError naming the feature. */
  unsupported(feature: string, where?: string): Error;
}

/** One inode as the walk needs it; each filesystem adds what it needs to read it. */
export interface Node {
  kind: PathKind;
  mode: number;
  size: number;
}

/** One filesystem, opened: its root, a name in a directory, a symlink's target. */
export interface Volume {
  root(): Promise<Node>;
  /** The entry `name` of directory `dir`, or undefined when there is none. */
  child(dir: Node, name: Buffer): Promise<Node | undefined>;
  /** The target of a symlink. */
  readlink(link: Node): Promise<Buffer>;
}
