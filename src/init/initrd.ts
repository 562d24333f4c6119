// Reads files out of an initramfs image (newc cpio, raw or compressed with
// gzip or zstd), so `hfk-init --dry-run --initrd FILE` checks exactly the
// config and key that initrd would boot with.

import * as zlib from 'node:zlib';
import { FormatError } from '../errors.ts';

export function decompressInitrd(bytes: Buffer, what: string): Buffer {
  if (bytes.length >= 2 && bytes[0] === 0x1f && bytes[1] === 0x8b) return zlib.gunzipSync(bytes);
  if (bytes.length >= 4 && bytes.readUInt32LE(0) === 0xfd2fb528) return zlib.zstdDecompressSync(bytes);
  if (bytes.toString('latin1', 0, 6) === '070701') return bytes;
  throw new FormatError(`${what} is not an initramfs this can read (newc cpio, raw, gzip or zstd)`);
}

export interface CpioEntry {
  name: string;
  mode: number;
  data: Buffer;
}

/** Every entry of a newc archive (through TRAILER!!!). */
export function parseNewc(archive: Buffer, what: string): CpioEntry[] {
  const out: CpioEntry[] = [];
  let off = 0;
  const pad4 = (n: number) => (n + 3) & ~3;
  while (off + 110 <= archive.length) {
    const magic = archive.toString('latin1', off, off + 6);
    if (magic !== '070701' && magic !== '070702') {
      // zero padding between concatenated archives
      if (archive[off] === 0) {
        off++;
        continue;
      }
      throw new FormatError(`${what}: bad cpio header at byte ${off}`);
    }
    const field = (i: number) => {
      const text = archive.toString('latin1', off + 6 + i * 8, off + 14 + i * 8);
      if (!/^[0-9a-fA-F]{8}$/.test(text)) throw new FormatError(`${what}: bad cpio header at byte ${off}`);
      return parseInt(text, 16);
    };
    const mode = field(1);
    const size = field(6);
    const nameSize = field(11);
    if (nameSize < 2) throw new FormatError(`${what}: cpio entry at byte ${off} has no name`);
    const nameStart = off + 110;
    const name = archive.toString('utf8', nameStart, nameStart + nameSize - 1);
    const dataStart = pad4(nameStart + nameSize);
    if (dataStart + size > archive.length) throw new FormatError(`${what}: entry ${name} runs past the end`);
    off = pad4(dataStart + size);
    if (name === 'TRAILER!!!') continue;
    out.push({ name: name.replace(/^\.?\/?/, ''), mode, data: archive.subarray(dataStart, dataStart + size) });
  }
  return out;
}

/** The files of an initrd image by path (without a leading '/'). */
export function readInitrd(bytes: Buffer, what: string): Map<string, CpioEntry> {
  return new Map(parseNewc(decompressInitrd(bytes, what), what).map((e) => [e.name, e]));
}
