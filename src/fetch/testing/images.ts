// Signed test images for unit tests of ranking and trust: a manifest over
// three real blocks, its pointer, and the store files, built in memory.

import { createPrivateKey } from 'node:crypto';
import { generateKeyPair, type PrivateKey } from '../../format/keys.ts';
import { manifestPath, pointerPath } from '../../format/layout.ts';
import { encodeManifest, encodePointer, type Manifest, manifestDigest } from '../../format/manifest.ts';
import { testBlock } from '../../source/testing/memory.ts';

/** A new signing key with its public half. */
export function newKey(): PrivateKey {
  const { privatePem, publicKey } = generateKeyPair();
  return { key: createPrivateKey(privatePem), publicKey };
}

/** The pointer to `manifest` as `version` of `name`, declaring `size` (default: its real size). */
export function pointerTo(name: string, version: number, manifest: Buffer, size = manifest.length): Buffer {
  return encodePointer({ format: 'hfk-pointer/1', name, version, manifest: `v${version}.hfkm`, sha256: manifestDigest(manifest), size });
}

/** Version `version` of image `name` signed by `key`: the manifest bytes and every store file (path → bytes). */
export function signedImage(name: string, version: number, key: PrivateKey): { manifest: Buffer; files: Map<string, Buffer> } {
  const blocks = [1, 2, 3].map((i) => testBlock(version * 10 + i));
  const m: Manifest = {
    header: {
      name,
      version,
      created: '2026-01-02T03:04:05.000Z',
      imageSize: blocks.length * 4096,
      blockSize: 4096,
      blockCount: blocks.length,
      codec: 'none',
      filesystem: 'squashfs',
      source: { kind: 'file', name: 'root.sqfs' },
      previous: null,
      keyId: key.publicKey.id,
    },
    blocks: blocks.map((b) => b.hash),
    objectSizes: new Map(blocks.map((b) => [b.hash, b.object.length])),
  };
  const manifest = encodeManifest(m, key);
  const files = new Map<string, Buffer>([
    [manifestPath(name, version), manifest],
    [pointerPath(name), pointerTo(name, version, manifest)],
    ...blocks.map((b): [string, Buffer] => [b.rel, b.object]),
  ]);
  return { manifest, files };
}
