// lookupPath against real images: one fixture tree, built into squashfs
// (several compressors), ext2/ext4 (several layouts) and erofs images by the
// real tools at test time. A missing tool fails the tests: the tools are in
// test/lab/packages.ts.

import { execFileSync } from 'node:child_process';
import { randomBytes } from 'node:crypto';
import { chmodSync, existsSync, linkSync, mkdirSync, mkdtempSync, readFileSync, rmSync, symlinkSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { FormatError, UsageError } from '../errors.ts';
import { lz4Block } from './rootfs-squashfs.ts';
import { lookupPath, UnsupportedFormatError, type ReadAt, type RootFilesystem } from './rootfs.ts';

const SYSTEMD = '#!/bin/sh\necho "not really systemd"\n';
const MANY = 300;
const manyName = (i: number) => `an-entry-with-a-fairly-long-name-to-fill-blocks-${String(i).padStart(3, '0')}`;
const DEEP = Array.from({ length: 24 }, (_, i) => `d${String(i + 1).padStart(2, '0')}`);
// Too long for a fast ext4 symlink: kept in a block (ext4 allows up to one block).
const LONG_TARGET = './'.repeat(495) + 'etc/passwd';
// Too long for an erofs inode's block: kept in a block of its own (FLAT_PLAIN).
const LONGER_TARGET = './'.repeat(2040) + 'etc/passwd';
const BIG = 16 * 1024 * 1024;

type Tree = 'big' | 'big-1k' | 'small';

/** The tree every image is built from: with the 16 MiB file or not; 1 KiB-block ext images cannot hold LONGER_TARGET. */
function buildTree(root: string, tree: Tree): void {
  const big = tree !== 'small';
  const p = (...parts: string[]) => join(root, ...parts);
  for (const d of ['usr/sbin', 'usr/lib/systemd', 'usr/bin', 'etc', 'many', 'loop', join('deep', ...DEEP)]) mkdirSync(p(d), { recursive: true });
  symlinkSync('usr/sbin', p('sbin'));
  symlinkSync('../lib/systemd/systemd', p('usr/sbin/init'));
  writeFileSync(p('usr/lib/systemd/systemd'), SYSTEMD);
  chmodSync(p('usr/lib/systemd/systemd'), 0o755);
  linkSync(p('usr/lib/systemd/systemd'), p('usr/bin/systemd-hardlink'));
  writeFileSync(p('etc/passwd'), 'root:x:0:0:root:/root:/bin/sh\n');
  chmodSync(p('etc/passwd'), 0o644);
  // Each entry has data, so the directory's blocks interleave with file blocks.
  for (let i = 1; i <= MANY; i++) writeFileSync(p('many', manyName(i)), `${i}\n`);
  writeFileSync(p('deep', ...DEEP, 'leaf'), 'leaf\n');
  symlinkSync('b', p('loop/a'));
  symlinkSync('a', p('loop/b'));
  symlinkSync('/usr/lib/systemd', p('abs'));
  symlinkSync('/nonexistent', p('dangling'));
  symlinkSync(LONG_TARGET, p('longlink'));
  if (tree !== 'big-1k') symlinkSync(LONGER_TARGET, p('longerlink'));
  execFileSync('mkfifo', [p('fifo')]);
  if (big) writeFileSync(p('big.bin'), randomBytes(BIG));
}

// ---- tools ------------------------------------------------------------------

const TOOL_PACKAGES: Record<string, string> = {
  mksquashfs: 'squashfs-tools',
  'mkfs.ext4': 'e2fsprogs',
  'mkfs.ext2': 'e2fsprogs',
  e2fsck: 'e2fsprogs',
  debugfs: 'e2fsprogs',
  'mkfs.erofs': 'erofs-utils',
  'dump.erofs': 'erofs-utils',
};

/** The tool's path; throws (never skips) when it is not installed. */
function tool(name: string): string {
  for (const dir of [...(process.env.PATH ?? '').split(':'), '/usr/sbin', '/sbin', '/usr/bin']) {
    if (dir && existsSync(join(dir, name))) return join(dir, name);
  }
  throw new Error(`${name} is not installed: it comes with the Debian package ${TOOL_PACKAGES[name]}, which 'node test/lab/packages.ts' installs`);
}

function run(name: string, args: string[]): string {
  return execFileSync(tool(name), args, { encoding: 'utf8', stdio: ['ignore', 'pipe', 'pipe'] });
}

// ---- images -----------------------------------------------------------------

interface Fixture {
  name: string;
  fs: RootFilesystem;
  file: string;
  tree: Tree;
  build(file: string, tree: string): void;
}

const sq = (comp: string, tree: Tree = 'big'): Omit<Fixture, 'file'> => ({
  name: `squashfs ${comp}`,
  fs: 'squashfs',
  tree,
  build: (file, tree) => run('mksquashfs', [tree, file, '-comp', comp, '-noappend', '-quiet', '-no-progress', '-all-root']),
});
const ext = (name: string, cmd: string, args: string[], tree: Tree, after?: (file: string) => void): Omit<Fixture, 'file'> => ({
  name,
  fs: 'ext4',
  tree,
  build: (file, dir) => {
    run(cmd, ['-q', '-F', '-E', 'root_owner=0:0', ...args, '-d', dir, file, tree === 'small' ? '8M' : '40M']);
    after?.(file);
  },
});
const erofs = (name: string, args: string[]): Omit<Fixture, 'file'> => ({
  name,
  fs: 'erofs',
  tree: 'big',
  build: (file, tree) => run('mkfs.erofs', ['--quiet', '-T0', '--all-root', ...args, file, tree]),
});

/** Images every lookup test runs against. */
const READABLE = [
  sq('gzip'),
  sq('zstd'),
  sq('lz4'),
  ext('ext4, 4 KiB blocks, 64-bit descriptors', 'mkfs.ext4', ['-b', '4096'], 'big'),
  ext('ext4, 1 KiB blocks, extent tree of depth 1', 'mkfs.ext4', ['-b', '1024'], 'big-1k'),
  ext('ext4, htree directories', 'mkfs.ext4', ['-b', '4096'], 'big', (file) => {
    // e2fsck -D rebuilds every directory as an htree; exit 1 means "changed".
    try {
      run('e2fsck', ['-fyD', file]);
    } catch (e) {
      if ((e as { status?: number }).status !== 1) throw e;
    }
  }),
  ext('ext4, 32-byte descriptors and meta_bg', 'mkfs.ext4', ['-b', '4096', '-O', '^64bit,meta_bg,^resize_inode'], 'big'),
  ext('ext2, 1 KiB blocks, block maps', 'mkfs.ext2', ['-b', '1024'], 'big-1k'),
  erofs('erofs, compact inodes', []),
  erofs('erofs, extended inodes', ['-Eforce-inode-extended']),
  erofs('erofs, lz4 file data', ['-zlz4']),
];
/** Images that use what lookupPath does not decode. */
const UNREADABLE = [
  { ...sq('xz', 'small'), feature: 'compressor xz' },
  { ...sq('lzo', 'small'), feature: 'compressor lzo' },
  { ...ext('ext4 with inline data', 'mkfs.ext4', ['-b', '4096', '-O', 'inline_data'], 'small'), feature: 'inline data' },
];

let work: string;
const images = new Map<string, Fixture>();

beforeAll(() => {
  work = mkdtempSync(join(tmpdir(), 'hfk-rootfs-'));
  for (const tree of ['big', 'big-1k', 'small'] as const) buildTree(join(work, tree), tree);
  let n = 0;
  for (const f of [...READABLE, ...UNREADABLE]) {
    const file = join(work, `image-${n++}.img`);
    f.build(file, join(work, f.tree));
    images.set(f.name, { ...f, file });
  }
});

afterAll(() => {
  if (work) rmSync(work, { recursive: true, force: true });
});

/** A ReadAt over a file held in memory, counting the bytes asked for. */
function reader(image: Buffer): ReadAt & { asked: number } {
  const read = Object.assign(
    async (offset: number, length: number) => {
      read.asked += length;
      return Buffer.from(image.subarray(offset, offset + length));
    },
    { asked: 0 },
  );
  return read;
}

const cache = new Map<string, Buffer>();
function bytesOf(name: string): Buffer {
  let b = cache.get(name);
  if (!b) {
    b = readFileSync(images.get(name)!.file);
    cache.set(name, b);
  }
  return b;
}

// ---- lookups ------------------------------------------------------------------

describe.each(READABLE.map((f) => [f.name, f.fs, f.tree] as const))('lookupPath on %s', (name, fs, tree) => {
  const lookup = (path: string, follow?: boolean) => lookupPath(reader(bytesOf(name)), fs, path, follow === undefined ? {} : { follow });

  it('resolves /sbin/init through two symlinks to an executable file, reading a few KiB of a large image', async () => {
    const image = bytesOf(name);
    const read = reader(image);
    const info = await lookupPath(read, fs, '/sbin/init');
    expect(info).toEqual({
      path: '/sbin/init',
      kind: 'file',
      mode: 0o755,
      size: SYSTEMD.length,
      executable: true,
      resolved: '/usr/lib/systemd/systemd',
    });
    expect(image.length).toBeGreaterThan(BIG);
    expect(read.asked).toBeLessThan(256 * 1024);
  });

  it('says undefined for what is not there', async () => {
    for (const path of ['/nope', '/usr/nope', '/usr/lib/systemd/systemd/x', '/etc/passwd/', '/many/zzz', '/many/0', '/dangling', '/deep/d01/d03']) {
      expect(await lookup(path), path).toBeUndefined();
    }
  });

  it('reports a non-executable file, the root, a fifo and a hard link', async () => {
    expect(await lookup('/etc/passwd')).toMatchObject({ kind: 'file', mode: 0o644, executable: false, resolved: '/etc/passwd' });
    expect(await lookup('/')).toMatchObject({ kind: 'dir', executable: false, resolved: '/' });
    expect(await lookup('/fifo')).toMatchObject({ kind: 'other', executable: false });
    expect(await lookup('/usr/bin/systemd-hardlink')).toMatchObject({ kind: 'file', executable: true, size: SYSTEMD.length });
  });

  it('reports a symlink itself with follow: false, and follows the ones before it', async () => {
    expect(await lookup('/sbin', false)).toEqual({
      path: '/sbin', kind: 'symlink', mode: 0o777, size: 'usr/sbin'.length, executable: false, target: 'usr/sbin', resolved: '/sbin',
    });
    expect(await lookup('/sbin/init', false)).toMatchObject({ kind: 'symlink', target: '../lib/systemd/systemd', resolved: '/usr/sbin/init' });
    expect(await lookup('/dangling', false)).toMatchObject({ kind: 'symlink', target: '/nonexistent' });
    // A trailing slash follows the last symlink even so.
    expect(await lookup('/sbin/', false)).toMatchObject({ kind: 'dir', resolved: '/usr/sbin' });
  });

  it('follows absolute symlinks from the root and resolves .. physically', async () => {
    expect(await lookup('/abs/systemd')).toMatchObject({ kind: 'file', resolved: '/usr/lib/systemd/systemd' });
    // /sbin is /usr/sbin, so /sbin/.. is /usr.
    expect(await lookup('/sbin/../lib/systemd/systemd')).toMatchObject({ resolved: '/usr/lib/systemd/systemd' });
    expect(await lookup('/../../etc/./passwd')).toMatchObject({ resolved: '/etc/passwd' });
  });

  it('follows a symlink whose target is kept in data blocks', async () => {
    expect(await lookup('/longlink')).toMatchObject({ kind: 'file', resolved: '/etc/passwd' });
    expect(await lookup('/longlink', false)).toMatchObject({ kind: 'symlink', size: LONG_TARGET.length, target: LONG_TARGET });
    if (tree === 'big-1k') return;
    expect(await lookup('/longerlink')).toMatchObject({ kind: 'file', resolved: '/etc/passwd' });
    expect(await lookup('/longerlink', false)).toMatchObject({ kind: 'symlink', target: LONGER_TARGET });
  });

  it('finds every entry of a directory that spans several blocks', async () => {
    const dir = await lookup('/many');
    expect(dir).toMatchObject({ kind: 'dir' });
    expect(dir!.size).toBeGreaterThan(8192);
    for (const i of [1, 2, 150, 299, MANY]) {
      expect(await lookup(`/many/${manyName(i)}`), manyName(i)).toMatchObject({ kind: 'file', size: `${i}\n`.length });
    }
  });

  it('walks a deep path', async () => {
    expect(await lookup(`/deep/${DEEP.join('/')}/leaf`)).toMatchObject({ kind: 'file', resolved: `/deep/${DEEP.join('/')}/leaf` });
  });

  it('throws a FormatError on a symlink loop', async () => {
    await expect(lookup('/loop/a')).rejects.toThrow(FormatError);
    await expect(lookup('/loop/a')).rejects.toThrow(/symlink loop/);
    expect(await lookup('/loop/a', false)).toMatchObject({ kind: 'symlink', target: 'b' });
  });
});

describe('the fixtures cover the layouts they are named for', () => {
  it('ext4 with 1 KiB blocks has an extent tree of depth 1 for the big directory', () => {
    const tree = run('debugfs', ['-R', 'ex /many', images.get('ext4, 1 KiB blocks, extent tree of depth 1')!.file]);
    expect(tree).toMatch(/^\s*0\/\s*1\s/m);
  });

  it('ext2 reaches the big directory through an indirect block', () => {
    expect(run('debugfs', ['-R', 'stat /many', images.get('ext2, 1 KiB blocks, block maps')!.file])).toMatch(/\(IND\)/);
  });

  it('erofs keeps short symlinks and directory tails inline, and the longest symlink in a block of its own', () => {
    const layout = (path: string) => /Layout: (\d)/.exec(run('dump.erofs', [`--path=${path}`, images.get('erofs, compact inodes')!.file]))?.[1];
    expect(layout('/usr/sbin/init')).toBe('2');
    expect(layout('/many')).toBe('2');
    expect(layout('/longerlink')).toBe('0');
  });

  it('e2fsck -D made the big directory an htree', () => {
    const flags = /Flags: 0x([0-9a-f]+)/.exec(run('debugfs', ['-R', 'stat /many', images.get('ext4, htree directories')!.file]));
    expect(parseInt(flags![1]!, 16) & 0x1000).toBe(0x1000);
  });
});

// ---- what it cannot read -------------------------------------------------------

describe.each(UNREADABLE.map((f) => [f.name, f.fs, f.feature] as const))('lookupPath on %s', (name, fs, feature) => {
  it(`throws an UnsupportedFormatError naming ${feature}`, async () => {
    const err = await lookupPath(reader(bytesOf(name)), fs, '/sbin/init').catch((e: unknown) => e);
    expect(err).toBeInstanceOf(UnsupportedFormatError);
    expect(err).toBeInstanceOf(FormatError);
    expect((err as UnsupportedFormatError).feature).toContain(feature);
    expect((err as Error).message).toContain(fs);
  });
});

describe('erofs directories stored compressed', () => {
  it('are reported as unsupported', async () => {
    const image = Buffer.from(bytesOf('erofs, compact inodes'));
    const bs = 1 << image[1024 + 12]!;
    const rootAt = image.readUInt32LE(1024 + 40) * bs + image.readUInt16LE(1024 + 14) * 32;
    image.writeUInt16LE((image.readUInt16LE(rootAt) & ~0xe) | (3 << 1), rootAt); // compressed, compact index
    const err = await lookupPath(reader(image), 'erofs', '/etc').catch((e: unknown) => e);
    expect(err).toBeInstanceOf(UnsupportedFormatError);
    expect((err as Error).message).toMatch(/compressed/);
  });
});

// ---- damaged images -----------------------------------------------------------

const FIRST: Record<RootFilesystem, string> = { squashfs: 'squashfs gzip', ext4: 'ext4, 4 KiB blocks, 64-bit descriptors', erofs: 'erofs, compact inodes' };
const MAGIC_AT: Record<RootFilesystem, number> = { squashfs: 0, ext4: 1024 + 0x38, erofs: 1024 };

describe.each(['squashfs', 'ext4', 'erofs'] as const)('a damaged %s image', (fs) => {
  it('with a bad magic gives a FormatError that names the superblock', async () => {
    const image = Buffer.from(bytesOf(FIRST[fs]).subarray(0, 64 * 1024));
    image[MAGIC_AT[fs]] ^= 0xff;
    await expect(lookupPath(reader(image), fs, '/sbin/init')).rejects.toThrow(new RegExp(`^${fs} image is damaged: superblock: magic`));
  });

  it('cut short, or empty, or garbage, gives a FormatError', async () => {
    const whole = bytesOf(FIRST[fs]);
    for (const image of [whole.subarray(0, 1100), whole.subarray(0, 8192), Buffer.alloc(0), randomBytes(4096)]) {
      const err = await lookupPath(reader(image), fs, '/sbin/init').catch((e: unknown) => e);
      expect(err, `${image.length} bytes`).toBeInstanceOf(FormatError);
    }
  });

  it('with random bytes changed in the structures a lookup reads gives an answer or a FormatError, never a crash', async () => {
    const image = bytesOf(FIRST[fs]);
    const paths = ['/sbin/init', '/many/' + manyName(200), '/longlink', '/nope'];
    // Which bytes does a lookup read?
    const spans: [number, number][] = [];
    const spy: ReadAt = async (offset, length) => {
      spans.push([offset, Math.min(length, image.length - offset)]);
      return Buffer.from(image.subarray(offset, offset + length));
    };
    for (const path of paths) await lookupPath(spy, fs, path);
    let seed = 0x2545f491;
    const random = (n: number) => {
      seed ^= seed << 13;
      seed ^= seed >>> 17;
      seed ^= seed << 5;
      return (seed >>> 0) % n;
    };
    for (let round = 0; round < 300; round++) {
      const changes = new Map<number, number>();
      for (let k = 1 + random(4); k > 0; k--) {
        const [from, length] = spans[random(spans.length)]!;
        changes.set(from + random(length), random(256));
      }
      const read: ReadAt = async (offset, length) => {
        const out = Buffer.from(image.subarray(offset, offset + length));
        for (const [at, value] of changes) if (at >= offset && at < offset + out.length) out[at - offset] = value;
        return out;
      };
      for (const path of paths) {
        try {
          await lookupPath(read, fs, path);
        } catch (e) {
          if (!(e instanceof FormatError)) throw new Error(`round ${round}, ${path}, changes ${JSON.stringify([...changes])}: ${(e as Error).stack}`);
        }
      }
    }
  });
});

// ---- arguments and the LZ4 decoder ----------------------------------------------

describe('lookupPath arguments', () => {
  it('refuses a relative path, a NUL byte and an unknown filesystem', async () => {
    const read = reader(Buffer.alloc(0));
    await expect(lookupPath(read, 'ext4', 'sbin/init')).rejects.toThrow(UsageError);
    await expect(lookupPath(read, 'ext4', '/sbin\0/init')).rejects.toThrow(UsageError);
    await expect(lookupPath(read, 'btrfs' as RootFilesystem, '/sbin/init')).rejects.toThrow(/expected one of squashfs, ext4, erofs/);
    expect(read.asked).toBe(0);
  });
});

describe('lz4Block', () => {
  it.each([
    ['literals only', [0x30, 0x61, 0x62, 0x63], 'abc'],
    ['an overlapping match', [0x16, 0x61, 0x01, 0x00, 0x10, 0x62], 'aaaaaaaaaaab'],
    ['a long literal run', [0xf0, 0x01, ...Buffer.from('x'.repeat(16))], 'x'.repeat(16)],
  ])('decodes %s', (_, input, expected) => {
    expect(lz4Block(Buffer.from(input), 64).toString()).toBe(expected);
  });

  it.each([
    ['a match before the start', [0x10, 0x61, 0x05, 0x00]],
    ['a zero offset', [0x10, 0x61, 0x00, 0x00]],
    ['literals past the input', [0x50, 0x61]],
    ['output past the limit', [0x1f, 0x61, 0x01, 0x00, 0xff, 0xff, 0x00]],
    ['a cut length', [0xf0, 0xff]],
  ])('refuses %s', (_, input) => {
    expect(() => lz4Block(Buffer.from(input), 64)).toThrow(RangeError);
  });
});

describe('a lookup ends, whatever the image claims', () => {
  it('an ext2 directory whose block map points at one block again and again (cached reads cost no I/O) is damage, not an endless scan', async () => {
    const file = join(work, 'loop.ext2');
    execFileSync('mkfs.ext2', ['-q', '-F', '-b', '1024', '-N', '64', file, '4M'], { stdio: 'ignore' });
    const image = readFileSync(file);
    const bs = 1024;
    const inodeSize = image.readUInt16LE(1024 + 88);
    const inodeTable = image.readUInt32LE(2 * bs + 8); // group 0's descriptor (1 KiB blocks: block 2)
    const root = inodeTable * bs + (2 - 1) * inodeSize;
    const dirBlock = image.readUInt32LE(root + 40);
    const [ind, dind, tind] = [4000, 4001, 4002]; // free at the end of a near-empty 4 MiB image
    for (let i = 0; i < bs / 4; i++) {
      image.writeUInt32LE(dirBlock, ind * bs + i * 4);
      image.writeUInt32LE(ind, dind * bs + i * 4);
      image.writeUInt32LE(dind, tind * bs + i * 4);
    }
    for (let i = 1; i < 12; i++) image.writeUInt32LE(dirBlock, root + 40 + i * 4);
    image.writeUInt32LE(ind, root + 40 + 12 * 4);
    image.writeUInt32LE(dind, root + 40 + 13 * 4);
    image.writeUInt32LE(tind, root + 40 + 14 * 4);
    image.writeUInt32LE(0, root + 4); // i_size: 2^40 bytes, a directory of ~10^9 blocks
    image.writeUInt32LE(256, root + 108);
    image.writeUInt32LE(2 ** 31, 1024 + 4); // s_blocks_count: an image large enough to hold it
    const read = reader(image);
    const err = await lookupPath(read, 'ext4', '/nonexistent').catch((e: unknown) => e);
    expect(err).toBeInstanceOf(FormatError);
    expect((err as Error).message).toMatch(/the lookup would go through more than 268435456 bytes/);
    expect(read.asked).toBeLessThan(256 * 1024);
    // Given the real size, the directory's claim is refused at once.
    await expect(lookupPath(reader(image), 'ext4', '/nonexistent', { size: image.length })).rejects.toThrow(/is larger than the image/);
  });
});
