// What the filesystem readers of rootfs.ts (squashfs, ext4, erofs) share:
// the bounded view of the image they read through, the node and volume each
// one returns, and the POSIX file type bits ext4 and erofs both store. The
// readers and rootfs.ts import it without a cycle.

export type PathKind = 'file' | 'dir' | 'symlink' | 'other';

/** The image as a reader sees it: every read bounded by its declared size. */
export interface Image {
  readonly size: number;
  /** The size the filesystem declares for itself (reads past it are damage). */
  declareSize(bytes: number, what: string): void;
  at(offset: number, length: number, what: string): Promise<Buffer>;
  /** Counts bytes gone through without a read (decoded metadata) against the lookup's budget. */
  charge(bytes: number, what: string): void;
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

/** The kind a POSIX mode's file type bits name; undefined for bits no file type has. */
export function modeKind(mode: number): PathKind | undefined {
  switch (mode & 0xf000) {
    case 0x4000: return 'dir';
    case 0x8000: return 'file';
    case 0xa000: return 'symlink';
    case 0x1000: case 0x2000: case 0x6000: case 0xc000: return 'other';
    default: return undefined;
  }
}
