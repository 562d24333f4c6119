import { execFileSync } from 'node:child_process';
import { lstatSync, mkdirSync, mkdtempSync, readFileSync, readlinkSync, rmSync, symlinkSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { afterAll, describe, expect, it } from 'vitest';
import { FormatError, InputError } from '../errors.ts';
import {
  archivePath,
  charDevice,
  CpioTree,
  dir,
  encodeHeader,
  encodeNewc,
  file,
  hostFile,
  newcChunks,
  parseNewc,
  sourceDateEpoch,
  symlink,
} from './cpio.ts';

const work = mkdtempSync(join(tmpdir(), 'hfk-cpio-'));
afterAll(() => rmSync(work, { recursive: true, force: true }));

const hex8 = (n: number) => n.toString(16).padStart(8, '0');
/** A newc header written out field by field, the way the format spec lists them. */
function golden(f: { ino: number; mode: number; nlink: number; mtime: number; size: number; rmaj?: number; rmin?: number; name: string }): string {
  return `070701${[f.ino, f.mode, 0, 0, f.nlink, f.mtime, f.size, 0, 0, f.rmaj ?? 0, f.rmin ?? 0, f.name.length + 1, 0].map(hex8).join('')}${f.name}\0`;
}

describe('newc encoding (golden bytes)', () => {
  it('writes a folder, a file and the trailer with fixed fields and 4-byte padding', async () => {
    const bytes = await encodeNewc([dir('a'), file('a/b', 'xyz')], { mtime: 0x5f5e1000 });
    const want =
      golden({ ino: 1, mode: 0o40755, nlink: 2, mtime: 0x5f5e1000, size: 0, name: 'a' }) + // 112 bytes, no padding
      golden({ ino: 2, mode: 0o100644, nlink: 1, mtime: 0x5f5e1000, size: 3, name: 'a/b' }) + '\0\0' + // 114 → 116
      'xyz\0' + // data 3 → 4
      golden({ ino: 0, mode: 0, nlink: 1, mtime: 0, size: 0, name: 'TRAILER!!!' }) + '\0\0\0'; // 121 → 124
    expect(bytes.toString('latin1')).toBe(want);
    expect(bytes.length).toBe(356);
  });

  it('writes symlinks with their target as data and char devices with rdev numbers', async () => {
    const bytes = await encodeNewc([symlink('sh', 'busybox'), charDevice('console', 5, 1, 0o600)], { mtime: 0 });
    const want =
      golden({ ino: 1, mode: 0o20600, nlink: 1, mtime: 0, size: 0, rmaj: 5, rmin: 1, name: 'console' }) + '\0\0' + // 118 → 120
      golden({ ino: 2, mode: 0o120777, nlink: 1, mtime: 0, size: 7, name: 'sh' }) + // 113 → 116
      '\0\0\0' + 'busybox\0' +
      golden({ ino: 0, mode: 0, nlink: 1, mtime: 0, size: 0, name: 'TRAILER!!!' }) + '\0\0\0';
    expect(bytes.toString('latin1')).toBe(want);
  });

  it('refuses header fields that do not fit and a namesize that does not match the name', () => {
    const h = { ino: 1, mode: 0, uid: 0, gid: 0, nlink: 1, mtime: 2 ** 32, filesize: 0, devmajor: 0, devminor: 0, rdevmajor: 0, rdevminor: 0, namesize: 2, check: 0 };
    expect(() => encodeHeader(h, 'a')).toThrow(/newc field mtime must fit in 32 bits: got 4294967296/);
    expect(() => encodeHeader({ ...h, mtime: 0 }, 'ab')).toThrow(/namesize must be the name's length \+ 1 \(3\): got 2/);
  });
});

describe('reproducibility', () => {
  it('sorts records, numbers inodes by position and ignores insertion order', async () => {
    const recs = [file('usr/bin/x', 'x'), dir('etc'), symlink('bin/sh', 'busybox'), file('etc/passwd', 'root')];
    const a = await encodeNewc(recs, { mtime: 7 });
    const b = await encodeNewc([...recs].reverse(), { mtime: 7 });
    expect(a.equals(b)).toBe(true);
    const entries = parseNewc(a);
    expect(entries.map((e) => e.name)).toEqual(['bin', 'bin/sh', 'etc', 'etc/passwd', 'usr', 'usr/bin', 'usr/bin/x']);
    expect(entries.map((e) => e.ino)).toEqual([1, 2, 3, 4, 5, 6, 7]);
    expect(new Set(entries.map((e) => `${e.mtime}:${e.uid}:${e.gid}`))).toEqual(new Set(['7:0:0']));
  });

  it('takes the mtime from SOURCE_DATE_EPOCH, else 0, and rejects nonsense', () => {
    expect(sourceDateEpoch({})).toBe(0);
    expect(sourceDateEpoch({ SOURCE_DATE_EPOCH: '1700000000' })).toBe(1700000000);
    expect(() => sourceDateEpoch({ SOURCE_DATE_EPOCH: 'yesterday' })).toThrow(InputError);
  });

  it('orders a folder before everything in it, even next to names with lower bytes', () => {
    const t = new CpioTree().add(file('a/b', ''), file('a-b', ''), file('a.b', ''));
    expect(t.records().map((r) => r.path)).toEqual(['a', 'a-b', 'a.b', 'a/b']);
  });
});

describe('CpioTree', () => {
  it('adds missing parents, lets an explicit folder redefine an implicit one, and refuses conflicts', () => {
    const t = new CpioTree().add(file('tmp/x/y', 'y'));
    expect(t.get('tmp')).toMatchObject({ type: 'dir', mode: 0o755 });
    t.add(dir('tmp', 0o1777));
    expect(t.get('tmp')).toMatchObject({ type: 'dir', mode: 0o1777 });
    t.add(file('/tmp/x/y', 'y')); // the same record again is harmless
    expect(() => t.add(file('tmp/x/y', 'other'))).toThrow(/\/tmp\/x\/y is added to the initramfs twice/);
    expect(() => t.add(file('tmp/x/y/z', ''))).toThrow(/\/tmp\/x\/y is a file, not a folder/);
    t.set(file('tmp/x/y', 'other'));
    expect(t.get('tmp/x/y')).toMatchObject({ data: { kind: 'bytes', bytes: Buffer.from('other') } });
  });

  it('normalises paths and refuses ones that escape the root', () => {
    expect(archivePath('/usr//bin/./node')).toBe('usr/bin/node');
    expect(() => archivePath('/')).toThrow(/names the root itself/);
    expect(() => archivePath('../etc')).toThrow(/contains '\.\.'/);
    expect(() => file('x', '', 0o10000)).toThrow(/permission bits from 0 to 0o7777/);
  });
});

describe('parseNewc', () => {
  it('reads an archive written by GNU cpio', () => {
    const src = join(work, 'gnu');
    mkdirSync(join(src, 'd'), { recursive: true });
    writeFileSync(join(src, 'd', 'f'), 'hello');
    symlinkSync('d/f', join(src, 'l'));
    const archive = execFileSync('cpio', ['-o', '-H', 'newc', '--quiet'], { cwd: src, input: 'd\nd/f\nl\n' });
    const entries = parseNewc(archive);
    expect(entries.map((e) => e.name)).toEqual(['d', 'd/f', 'l']);
    expect(entries[1]!.data.toString()).toBe('hello');
    expect(entries[2]!.data.toString()).toBe('d/f');
    expect(entries[2]!.mode & 0o170000).toBe(0o120000);
  });

  it('names what is wrong with a damaged archive', () => {
    expect(() => parseNewc(Buffer.from('070702'.padEnd(120, '0')))).toThrow(FormatError);
    expect(() => parseNewc(Buffer.from('070702'.padEnd(120, '0')))).toThrow(/must start with '070701': got '070702'/);
    expect(() => parseNewc(Buffer.alloc(10))).toThrow(/ends inside a header at byte 0/);
  });
});

describe('round trip through GNU cpio -i', () => {
  it('extracts files, modes, symlinks, char devices and the fixed mtime', async () => {
    const host = join(work, 'host.bin');
    const big = Buffer.alloc(3 * 1024 * 1024 + 3, 0);
    for (let i = 0; i < big.length; i++) big[i] = (i * 2654435761) >>> 24;
    writeFileSync(host, big);
    const tree = new CpioTree().add(
      dir('tmp', 0o1777),
      file('etc/hosts', '127.0.0.1 localhost\n'),
      file('empty', ''),
      file('four', 'abcd'),
      file('bin/suid', '#!/bin/sh\n', 0o4755),
      file('usr/share/ünïcode name', 'ü'),
      hostFile('usr/bin/big', host, 0o755),
      symlink('bin/sh', 'busybox'),
      symlink('lib64', 'usr/lib'),
      charDevice('dev/console', 5, 1, 0o600),
      charDevice('dev/null', 1, 3, 0o666),
    );
    const chunks: Buffer[] = [];
    for await (const c of newcChunks(tree, { mtime: 1234567890 })) chunks.push(c);
    const archive = Buffer.concat(chunks);
    const out = join(work, 'out');
    mkdirSync(out);
    execFileSync('cpio', ['-i', '-d', '-m', '--no-absolute-filenames', '--quiet'], { cwd: out, input: archive });

    expect(readFileSync(join(out, 'etc/hosts'), 'utf8')).toBe('127.0.0.1 localhost\n');
    expect(readFileSync(join(out, 'empty')).length).toBe(0);
    expect(readFileSync(join(out, 'four'), 'utf8')).toBe('abcd');
    expect(readFileSync(join(out, 'usr/share/ünïcode name'), 'utf8')).toBe('ü');
    expect(readFileSync(join(out, 'usr/bin/big')).equals(big)).toBe(true);
    expect(lstatSync(join(out, 'usr/bin/big')).mode & 0o7777).toBe(0o755);
    expect(lstatSync(join(out, 'bin/suid')).mode & 0o7777).toBe(0o4755);
    expect(lstatSync(join(out, 'tmp')).mode & 0o7777).toBe(0o1777);
    expect(readlinkSync(join(out, 'bin/sh'))).toBe('busybox');
    expect(readlinkSync(join(out, 'lib64'))).toBe('usr/lib');
    const con = lstatSync(join(out, 'dev/console'));
    expect(con.isCharacterDevice()).toBe(true);
    expect([Math.floor(con.rdev / 256) & 0xfff, con.rdev & 0xff]).toEqual([5, 1]);
    expect(con.mode & 0o777).toBe(0o600);
    const nul = lstatSync(join(out, 'dev/null'));
    expect([Math.floor(nul.rdev / 256) & 0xfff, nul.rdev & 0xff, nul.mode & 0o777]).toEqual([1, 3, 0o666]);
    for (const p of ['etc/hosts', 'usr/bin/big', 'bin/suid']) expect(lstatSync(join(out, p)).mtimeMs).toBe(1234567890_000);
    // and GNU cpio lists exactly what we wrote, in our order
    const listed = execFileSync('cpio', ['-t', '--quiet'], { input: archive }).toString().trim().split('\n');
    expect(listed).toEqual(tree.records().map((r) => r.path));
  });

  it('fails with a clear message when a host file changes size after it was added', async () => {
    const p = join(work, 'shrinks');
    writeFileSync(p, 'longer content');
    const rec = hostFile('x', p);
    writeFileSync(p, 'short');
    await expect(encodeNewc([rec])).rejects.toThrow(/changed while it was written into the initramfs: expected 14 bytes, read 5/);
  });
});
