// Recognises the filesystem at the start of an image from its superblock
// magic, so the publisher can record it and the init can mount with -t.

import { z } from 'zod';

export const FILESYSTEMS = ['squashfs', 'ext4', 'iso9660', 'erofs', 'unknown'] as const;
export const Filesystem = z.enum(FILESYSTEMS);
export type Filesystem = z.infer<typeof Filesystem>;

/** How many leading bytes detectFilesystem needs to see every magic it knows. */
export const FSTYPE_PROBE_BYTES = 36 * 1024;

export function detectFilesystem(head: Uint8Array): Filesystem {
  const b = Buffer.from(head.buffer, head.byteOffset, head.byteLength);
  if (b.length >= 4 && b.toString('latin1', 0, 4) === 'hsqs') return 'squashfs';
  if (b.length >= 1028 && b.readUInt32LE(1024) === 0xe0f5e1e2) return 'erofs';
  // ext2/3/4 share the magic; the kernel's ext4 driver mounts all three.
  if (b.length >= 1082 && b.readUInt16LE(1024 + 56) === 0xef53) return 'ext4';
  if (b.length >= 32774 && b.toString('latin1', 32769, 32774) === 'CD001') return 'iso9660';
  return 'unknown';
}
