// Where things live in a store (relative paths, '/'-separated, the same on
// disk and over HTTP). See docs/FORMAT.md.
//
//   blocks/ab/ab01…ef        block object named by the SHA-256 of its content
//   images/NAME/v7.hfkm      manifest of version 7 (immutable)
//   images/NAME/latest.json  pointer to the latest manifest (the only mutable file)

export const BLOCKS_DIR = 'blocks';
export const IMAGES_DIR = 'images';
export const POINTER_FILE = 'latest.json';

export function blockPath(hash: string): string {
  return `${BLOCKS_DIR}/${hash.slice(0, 2)}/${hash}`;
}

export function imageDir(name: string): string {
  return `${IMAGES_DIR}/${name}`;
}

export function pointerPath(name: string): string {
  return `${IMAGES_DIR}/${name}/${POINTER_FILE}`;
}

export function manifestFile(version: number): string {
  return `v${version}.hfkm`;
}

export function manifestPath(name: string, version: number): string {
  return `${IMAGES_DIR}/${name}/${manifestFile(version)}`;
}

/** The version number of a manifest file name, or undefined if it is not one. */
export function parseManifestFile(file: string): number | undefined {
  const m = /^v([1-9][0-9]*)\.hfkm$/.exec(file);
  return m ? Number(m[1]) : undefined;
}

/** `NAME` or `NAME@VERSION` as typed by a user. */
export interface ImageRef {
  name: string;
  version: number | undefined;
}
