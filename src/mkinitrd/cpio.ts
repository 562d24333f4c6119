// The newc ("070701") cpio format the kernel unpacks into its rootfs, after
// u-root's pkg/cpio: small record types (file, dir, symlink, char device), a
// tree that keeps one record per path and adds missing parent folders, and a
// streaming writer. Archives are reproducible: records are written sorted by
// path, every mtime is one fixed value (SOURCE_DATE_EPOCH or 0), owners are
// 0:0, and inode numbers are the records' positions in that order.
//
// Header: magic "070701", then 13 fields of 8 hex digits — ino, mode, uid,
// gid, nlink, mtime, filesize, devmajor, devminor, rdevmajor, rdevminor,
// namesize (with its NUL), check (0) — then the name and its NUL padded to a
// multiple of 4, then the data padded to a multiple of 4. "TRAILER!!!" ends it.

import { createReadStream, lstatSync, readdirSync, readlinkSync, statSync } from 'node:fs';
import { join } from 'node:path';
import { FormatError, InputError } from '../errors.ts';

export const NEWC_MAGIC = '070701';
export const NEWC_HEADER_SIZE = 110;
export const TRAILER_NAME = 'TRAILER!!!';

export const S_IFMT = 0o170000;
export const S_IFREG = 0o100000;
export const S_IFDIR = 0o040000;
export const S_IFLNK = 0o120000;
export const S_IFCHR = 0o020000;

/** Where a file's bytes come from: memory, or a host file read while writing. */
export type FileData = { kind: 'bytes'; bytes: Uint8Array } | { kind: 'host'; path: string; size: number };

interface RecordBase {
  /** Path inside the archive, relative, without a leading '/' (e.g. 'usr/bin/node'). */
  path: string;
  /** Free label for size reports (e.g. 'node', 'modules'); not written. */
  tag?: string;
}
export interface FileRecord extends RecordBase { type: 'file'; mode: number; data: FileData }
export interface DirRecord extends RecordBase { type: 'dir'; mode: number }
export interface SymlinkRecord extends RecordBase { type: 'symlink'; target: string }
export interface CharDeviceRecord extends RecordBase { type: 'chardev'; mode: number; major: number; minor: number }
export type CpioRecord = FileRecord | DirRecord | SymlinkRecord | CharDeviceRecord;

/**
 * The canonical archive form of a path: relative, '/'-separated, no '.',
 * '..' or empty parts. Throws InputError for paths that escape or are empty.
 */
export function archivePath(p: string): string {
  const parts = p.split('/').filter((s) => s !== '' && s !== '.');
  if (parts.length === 0) throw new InputError(`initramfs path '${p}' names the root itself; expected a path below it such as 'etc/hosts'`);
  if (parts.includes('..')) throw new InputError(`initramfs path '${p}' contains '..'; expected a path below the root`);
  return parts.join('/');
}

function checkMode(mode: number, what: string): number {
  if (!Number.isInteger(mode) || mode < 0 || mode > 0o7777) {
    throw new InputError(`mode of ${what} must be permission bits from 0 to 0o7777: got ${mode}`);
  }
  return mode;
}

/** A regular file with bytes (a string is UTF-8). */
export function file(path: string, content: string | Uint8Array, mode = 0o644): FileRecord {
  const bytes = typeof content === 'string' ? Buffer.from(content, 'utf8') : content;
  return { type: 'file', path: archivePath(path), mode: checkMode(mode, path), data: { kind: 'bytes', bytes } };
}

/**
 * A regular file whose bytes are read from `hostPath` while the archive is
 * written (large binaries are streamed, never held in memory). The mode
 * defaults to the host file's permission bits.
 */
export function hostFile(path: string, hostPath: string, mode?: number): FileRecord {
  let st;
  try {
    st = statSync(hostPath);
  } catch (e) {
    throw new InputError(`cannot add ${hostPath} to the initramfs as /${archivePath(path)}: ${(e as Error).message}`, { cause: e });
  }
  if (!st.isFile()) throw new InputError(`cannot add ${hostPath} to the initramfs as /${archivePath(path)}: expected a regular file, found another kind`);
  return {
    type: 'file',
    path: archivePath(path),
    mode: checkMode(mode ?? st.mode & 0o7777, path),
    data: { kind: 'host', path: hostPath, size: st.size },
  };
}

export function dir(path: string, mode = 0o755): DirRecord {
  return { type: 'dir', path: archivePath(path), mode: checkMode(mode, path) };
}

export function symlink(path: string, target: string): SymlinkRecord {
  if (target === '') throw new InputError(`symlink /${archivePath(path)} needs a target`);
  return { type: 'symlink', path: archivePath(path), target };
}

export function charDevice(path: string, major: number, minor: number, mode = 0o600): CharDeviceRecord {
  for (const [n, v] of [['major', major], ['minor', minor]] as const) {
    if (!Number.isInteger(v) || v < 0 || v > 0xffffffff) throw new InputError(`${n} number of /${archivePath(path)} must be a whole number ≥ 0: got ${v}`);
  }
  return { type: 'chardev', path: archivePath(path), mode: checkMode(mode, path), major, minor };
}

/**
 * A host folder's contents below `prefix` in the archive: folders and files
 * with their permission bits, symlinks as they are. Other kinds (sockets,
 * devices) are refused: use charDevice() for device nodes.
 */
export function hostTree(hostDir: string, prefix: string): CpioRecord[] {
  const out: CpioRecord[] = [];
  const walk = (host: string, at: string) => {
    for (const name of readdirSync(host).sort()) {
      const h = join(host, name);
      const a = `${at}/${name}`;
      const st = lstatSync(h);
      if (st.isDirectory()) {
        out.push(dir(a, st.mode & 0o7777));
        walk(h, a);
      } else if (st.isFile()) out.push(hostFile(a, h, st.mode & 0o7777));
      else if (st.isSymbolicLink()) out.push(symlink(a, readlinkSync(h)));
      else throw new InputError(`${h} is neither a file, a folder nor a symlink: cannot put it in the initramfs`);
    }
  };
  walk(hostDir, archivePath(prefix));
  return out;
}

export function tagged<T extends CpioRecord>(tag: string, records: T[]): T[] {
  return records.map((r) => ({ ...r, tag }));
}

export function dataSize(r: CpioRecord): number {
  if (r.type === 'file') return r.data.kind === 'bytes' ? r.data.bytes.length : r.data.size;
  if (r.type === 'symlink') return Buffer.byteLength(r.target);
  return 0;
}

/** SOURCE_DATE_EPOCH (reproducible-builds.org) as seconds, or 0. */
export function sourceDateEpoch(env: NodeJS.ProcessEnv = process.env): number {
  const v = env.SOURCE_DATE_EPOCH;
  if (v === undefined || v === '') return 0;
  if (!/^\d+$/.test(v) || Number(v) > 0xffffffff) {
    throw new InputError(`SOURCE_DATE_EPOCH must be whole seconds since 1970 that fit in 32 bits: got '${v}'`);
  }
  return Number(v);
}

/** Byte-wise order of UTF-8 paths: a folder always sorts before what it holds. */
export function comparePaths(a: string, b: string): number {
  return Buffer.compare(Buffer.from(a), Buffer.from(b));
}

/**
 * One record per path. `add` refuses a second, different record for a path
 * (two components claiming one file is a bug); `set` replaces on purpose.
 * Missing parent folders are added as 0755 dirs.
 */
export class CpioTree {
  readonly #records = new Map<string, CpioRecord>();
  /** Folders made implicitly for a child; an explicit dir() may redefine them. */
  readonly #implicit = new Set<string>();

  add(...records: CpioRecord[]): this {
    for (const r of records) this.#put(r, false);
    return this;
  }

  set(...records: CpioRecord[]): this {
    for (const r of records) this.#put(r, true);
    return this;
  }

  has(path: string): boolean {
    return this.#records.has(archivePath(path));
  }

  get(path: string): CpioRecord | undefined {
    return this.#records.get(archivePath(path));
  }

  get size(): number {
    return this.#records.size;
  }

  /** Every record, sorted by path (the order they are written in). */
  records(): CpioRecord[] {
    return [...this.#records.values()].sort((a, b) => comparePaths(a.path, b.path));
  }

  #put(r: CpioRecord, replace: boolean): void {
    const path = archivePath(r.path);
    const parts = path.split('/');
    for (let i = 1; i < parts.length; i++) {
      const parent = parts.slice(0, i).join('/');
      const existing = this.#records.get(parent);
      if (!existing) {
        this.#records.set(parent, { type: 'dir', path: parent, mode: 0o755, ...(r.tag ? { tag: r.tag } : {}) });
        this.#implicit.add(parent);
      } else if (existing.type !== 'dir') {
        throw new InputError(`cannot add /${path} to the initramfs: /${parent} is a ${existing.type}, not a folder`);
      }
    }
    const old = this.#records.get(path);
    const rec = { ...r, path } as CpioRecord;
    if (old && !replace) {
      const sameDir = old.type === 'dir' && rec.type === 'dir';
      if (sameDir && (this.#implicit.has(path) || old.mode === rec.mode)) {
        // an explicit folder redefines an implicit one; the same folder twice is harmless
      } else if (!sameRecord(old, rec)) {
        throw new InputError(`/${path} is added to the initramfs twice (${describe(old)} and ${describe(rec)})`, {
          hint: 'each path may come from one component only; use extra files to replace a default on purpose',
        });
      }
    }
    if (old?.type === 'dir' && rec.type !== 'dir' && [...this.#records.keys()].some((k) => k.startsWith(`${path}/`))) {
      throw new InputError(`cannot replace folder /${path} with a ${rec.type}: it holds other entries`);
    }
    this.#records.set(path, rec);
    this.#implicit.delete(path);
  }
}

function describe(r: CpioRecord): string {
  const by = r.tag ? ` from ${r.tag}` : '';
  if (r.type === 'file') return `file${r.data.kind === 'host' ? ` ${r.data.path}` : ''}${by}`;
  if (r.type === 'symlink') return `symlink → ${r.target}${by}`;
  return `${r.type}${by}`;
}

function sameRecord(a: CpioRecord, b: CpioRecord): boolean {
  if (a.type !== b.type) return false;
  if (a.type === 'symlink' && b.type === 'symlink') return a.target === b.target;
  if (a.type === 'chardev' && b.type === 'chardev') return a.mode === b.mode && a.major === b.major && a.minor === b.minor;
  if (a.type === 'file' && b.type === 'file') {
    if (a.mode !== b.mode) return false;
    if (a.data.kind === 'host' && b.data.kind === 'host') return a.data.path === b.data.path;
    if (a.data.kind === 'bytes' && b.data.kind === 'bytes') return Buffer.compare(a.data.bytes, b.data.bytes) === 0;
  }
  return false;
}

/** The fields of one newc header. */
export interface NewcHeader {
  ino: number;
  mode: number;
  uid: number;
  gid: number;
  nlink: number;
  mtime: number;
  filesize: number;
  devmajor: number;
  devminor: number;
  rdevmajor: number;
  rdevminor: number;
  /** Name length in bytes including the terminating NUL. */
  namesize: number;
  check: number;
}

const FIELDS = ['ino', 'mode', 'uid', 'gid', 'nlink', 'mtime', 'filesize', 'devmajor', 'devminor', 'rdevmajor', 'rdevminor', 'namesize', 'check'] as const;

export function pad4(n: number): number {
  return (4 - (n % 4)) % 4;
}

/** Header + name + NUL + padding, as bytes. */
export function encodeHeader(h: NewcHeader, name: string): Buffer {
  const nameBytes = Buffer.from(name, 'utf8');
  if (h.namesize !== nameBytes.length + 1) throw new FormatError(`newc namesize must be the name's length + 1 (${nameBytes.length + 1}): got ${h.namesize}`);
  let text = NEWC_MAGIC;
  for (const f of FIELDS) {
    const v = h[f];
    if (!Number.isInteger(v) || v < 0 || v > 0xffffffff) throw new FormatError(`newc field ${f} must fit in 32 bits: got ${v}`);
    text += v.toString(16).padStart(8, '0');
  }
  const out = Buffer.alloc(NEWC_HEADER_SIZE + nameBytes.length + 1 + pad4(NEWC_HEADER_SIZE + nameBytes.length + 1));
  out.write(text, 0, 'latin1');
  nameBytes.copy(out, NEWC_HEADER_SIZE);
  return out;
}

export interface WriteOptions {
  /** Seconds since 1970 for every entry (default: SOURCE_DATE_EPOCH or 0). */
  mtime?: number;
}

/** The header of record number `index` (0-based) in a sorted archive. */
export function headerFor(r: CpioRecord, index: number, mtime: number): NewcHeader {
  const type = { file: S_IFREG, dir: S_IFDIR, symlink: S_IFLNK, chardev: S_IFCHR }[r.type];
  const perm = r.type === 'symlink' ? 0o777 : r.mode;
  return {
    ino: index + 1,
    mode: type | perm,
    uid: 0,
    gid: 0,
    nlink: r.type === 'dir' ? 2 : 1,
    mtime,
    filesize: dataSize(r),
    devmajor: 0,
    devminor: 0,
    rdevmajor: r.type === 'chardev' ? r.major : 0,
    rdevminor: r.type === 'chardev' ? r.minor : 0,
    namesize: Buffer.byteLength(r.path) + 1,
    check: 0,
  };
}

export function trailer(): Buffer {
  return encodeHeader(
    { ino: 0, mode: 0, uid: 0, gid: 0, nlink: 1, mtime: 0, filesize: 0, devmajor: 0, devminor: 0, rdevmajor: 0, rdevminor: 0, namesize: TRAILER_NAME.length + 1, check: 0 },
    TRAILER_NAME,
  );
}

/**
 * The streaming writer: yields the archive as chunks, reading host files as
 * it goes. Records are sorted (and parents added) first; a host file whose
 * size changed since it was added is an error, not a corrupt archive.
 */
export async function* newcChunks(records: Iterable<CpioRecord> | CpioTree, options: WriteOptions = {}): AsyncGenerator<Buffer> {
  const mtime = options.mtime ?? sourceDateEpoch();
  const list = (records instanceof CpioTree ? records : new CpioTree().add(...records)).records();
  for (let i = 0; i < list.length; i++) {
    const r = list[i]!;
    const h = headerFor(r, i, mtime);
    yield encodeHeader(h, r.path);
    if (r.type === 'symlink') {
      yield Buffer.concat([Buffer.from(r.target), Buffer.alloc(pad4(h.filesize))]);
    } else if (r.type === 'file' && r.data.kind === 'bytes') {
      yield Buffer.from(r.data.bytes.buffer, r.data.bytes.byteOffset, r.data.bytes.byteLength);
      if (pad4(h.filesize)) yield Buffer.alloc(pad4(h.filesize));
    } else if (r.type === 'file' && r.data.kind === 'host') {
      let n = 0;
      for await (const chunk of createReadStream(r.data.path, { highWaterMark: 1 << 20 }) as AsyncIterable<Buffer>) {
        n += chunk.length;
        if (n > h.filesize) break;
        yield chunk;
      }
      if (n !== h.filesize) {
        throw new InputError(`${r.data.path} changed while it was written into the initramfs: expected ${h.filesize} bytes, read ${n}`, {
          hint: 'build again once nothing writes to that file',
        });
      }
      if (pad4(h.filesize)) yield Buffer.alloc(pad4(h.filesize));
    }
  }
  yield trailer();
}

/** The whole archive in memory (tests, small archives). */
export async function encodeNewc(records: Iterable<CpioRecord> | CpioTree, options: WriteOptions = {}): Promise<Buffer> {
  const parts: Buffer[] = [];
  for await (const c of newcChunks(records, options)) parts.push(c);
  return Buffer.concat(parts);
}

/** One entry read back from an archive. */
export interface NewcEntry extends NewcHeader {
  name: string;
  data: Buffer;
}

/** Reads a whole newc archive (up to its trailer). Pure; for tests and checks. */
export function parseNewc(buf: Buffer): NewcEntry[] {
  const out: NewcEntry[] = [];
  let off = 0;
  for (;;) {
    if (off + NEWC_HEADER_SIZE > buf.length) throw new FormatError(`newc archive ends inside a header at byte ${off}: expected a '${TRAILER_NAME}' entry`);
    const magic = buf.toString('latin1', off, off + 6);
    if (magic !== NEWC_MAGIC) throw new FormatError(`newc header at byte ${off} must start with '${NEWC_MAGIC}': got '${magic}'`);
    const h = {} as NewcHeader;
    FIELDS.forEach((f, i) => {
      const text = buf.toString('latin1', off + 6 + 8 * i, off + 14 + 8 * i);
      if (!/^[0-9a-fA-F]{8}$/.test(text)) throw new FormatError(`newc field ${f} at byte ${off + 6 + 8 * i} must be 8 hex digits: got '${text}'`);
      h[f] = parseInt(text, 16);
    });
    const nameStart = off + NEWC_HEADER_SIZE;
    const name = buf.toString('utf8', nameStart, nameStart + h.namesize - 1);
    const dataStart = nameStart + h.namesize + pad4(NEWC_HEADER_SIZE + h.namesize);
    if (dataStart + h.filesize > buf.length) throw new FormatError(`newc entry '${name}' claims ${h.filesize} bytes but the archive ends first`);
    if (name === TRAILER_NAME) return out;
    out.push({ ...h, name, data: buf.subarray(dataStart, dataStart + h.filesize) });
    off = dataStart + h.filesize + pad4(h.filesize);
  }
}
