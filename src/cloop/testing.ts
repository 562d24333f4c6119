// Cloop files built in memory for tests: no create_compressed_fs needed.

import * as zlib from 'node:zlib';
import { CLOOP_HEADER_BYTES, type ReadAt } from './cloop.ts';

/** A cloop V2.0 file of `blocks` (each exactly blockSize bytes). */
export function buildCloop(blocks: Buffer[], blockSize: number): Buffer {
  const head = Buffer.alloc(CLOOP_HEADER_BYTES + 8);
  head.write('#!/bin/sh\n#V2.0 Format\nmodprobe cloop file=$0 && mount -r -t iso9660 /dev/cloop $1\nexit $?\n', 'latin1');
  head.writeUInt32BE(blockSize, 128);
  head.writeUInt32BE(blocks.length, 132);
  const packed = blocks.map((b) => zlib.deflateSync(b));
  const table = Buffer.alloc((blocks.length + 1) * 8);
  let at = head.length + table.length;
  packed.forEach((p, i) => {
    table.writeBigUInt64BE(BigInt(at), i * 8);
    at += p.length;
  });
  table.writeBigUInt64BE(BigInt(at), blocks.length * 8);
  return Buffer.concat([head, table, ...packed]);
}

/** A ReadAt over a buffer that counts the bytes it was asked for. */
export function memoryReader(file: Buffer): { readAt: ReadAt; asked: () => number } {
  let asked = 0;
  return {
    readAt: async (buf, position) => {
      asked += buf.length;
      const n = Math.max(0, Math.min(buf.length, file.length - position));
      file.copy(buf, 0, position, position + n);
      return n;
    },
    asked: () => asked,
  };
}

