// The publisher end to end, through the built CLI, on real filesystem images
// made by mksquashfs, mkfs.ext4 and create_compressed_fs.

import { execFileSync } from 'node:child_process';
import { chmodSync, cpSync, existsSync, mkdirSync, readdirSync, readFileSync, rmSync, statSync, truncateSync, writeFileSync } from 'node:fs';
import { join } from 'node:path';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { blockPath, manifestPath, pointerPath } from '../../src/format/layout.ts';
import { blockLength, decodeManifest } from '../../src/format/manifest.ts';
import { loadPublicKey } from '../../src/format/keys.ts';
import { decodeBlockSync, encodeBlock, objectDigest } from '../../src/format/codec.ts';
import { readBlock, readManifest, verifyObject } from '../../src/store/images.ts';
import { LocalStore } from '../../src/store/local.ts';
import { hfk, hfkJson, hfkSpawn, waitForLine } from '../helpers/cli.ts';
import { fingerprint, makeTree, mkcloop, mkext4, mksquashfs, pseudoRandom } from '../helpers/images.ts';
import { tempDir, tempDirKeep } from '../helpers/tmp.ts';

/** Rebuilds an image from its store, block by verified block. */
async function reassemble(storeDir: string, name: string, version?: number): Promise<Buffer> {
  const store = await LocalStore.open(storeDir);
  const { manifest } = await readManifest(store, name, version, null);
  const parts: Buffer[] = [];
  for (let i = 0; i < manifest.blocks.length; i++) {
    const h = manifest.blocks[i]!;
    const len = blockLength(manifest.header, i);
    parts.push(h === null ? Buffer.alloc(len) : await readBlock(store, h, len, manifest.objectSizes.get(h)));
  }
  return Buffer.concat(parts);
}

let work: string;
let key: string;
let pub: string;

beforeAll(async () => {
  work = tempDirKeep('hfk-publish-');
  const r = await hfk(['keygen', '--out', join(work, 'k')]);
  expect(r.code, r.stderr).toBe(0);
  key = join(work, 'k.key');
  pub = join(work, 'k.pub');
});
afterAll(() => rmSync(work, { recursive: true, force: true }));

describe('hfk keygen', () => {
  it('writes a private key only its owner can read, and refuses to overwrite', async () => {
    expect(statSync(key).mode & 0o777).toBe(0o600);
    expect(readFileSync(pub, 'utf8')).toMatch(/^hfk-ed25519 [A-Za-z0-9+/]{43}= k\n$/);
    const again = await hfk(['keygen', '--out', join(work, 'k')]);
    expect(again.code).toBe(2);
    expect(again.stderr).toMatch(/k.pub already exists/);
    expect(again.stderr).toMatch(/--force/);
  });
});

describe('publishing a squashfs image', () => {
  it('publishes, verifies, and reassembles the exact bytes; republishing writes only changed blocks', async () => {
    const dir = tempDir();
    const tree = join(dir, 'tree');
    makeTree(tree);
    const img1 = mksquashfs(tree, join(dir, 'v1.sqfs'), ['-noI', '-noD', '-noF', '-noX']);
    const store = join(dir, 'store');

    const r1 = await hfkJson(['publish', img1, '--store', store, '--name', 'test', '--key', key, '--block-size', '16K']);
    expect(r1.version).toBe(1);
    expect(r1.image.filesystem).toBe('squashfs');
    expect(r1.blocks.total).toBe(Math.ceil(statSync(img1).size / 16384));
    expect(r1.blocks.new).toBe(r1.blocks.unique);
    expect(r1.blocks.total - r1.blocks.zero - r1.blocks.unique).toBeGreaterThan(0); // repeated blocks (readme text)
    // Each unique block is one file; zero blocks have none.
    const stored = readdirSync(join(store, 'blocks')).flatMap((f) => readdirSync(join(store, 'blocks', f)));
    expect(stored.length).toBe(r1.blocks.unique);
    expect((await reassemble(store, 'test')).equals(readFileSync(img1))).toBe(true);

    const v = await hfk(['verify', '--store', store, '--key', pub]);
    expect(v.code, v.stdout + v.stderr).toBe(0);
    expect(v.stdout).toMatch(/OK: no problems found/);

    // Change one file; the new image shares most blocks with the old one.
    writeFileSync(join(tree, 'usr/share/doc/f3'), pseudoRandom(5000, 999));
    const img2 = mksquashfs(tree, join(dir, 'v2.sqfs'), ['-noI', '-noD', '-noF', '-noX']);
    const a = readFileSync(img1);
    const b = readFileSync(img2);
    const bs = 16384;
    // The blocks of v2 whose content v1 does not have anywhere: what must be written.
    const v1Blocks = new Set<string>();
    for (let off = 0; off < a.length; off += bs) v1Blocks.add(a.subarray(off, off + bs).toString('base64'));
    const novel = new Set<string>();
    for (let off = 0; off < b.length; off += bs) {
      const blk = b.subarray(off, off + bs);
      if (!v1Blocks.has(blk.toString('base64')) && blk.some((x) => x !== 0)) novel.add(blk.toString('base64'));
    }
    expect(novel.size).toBeGreaterThan(0);
    const r2 = await hfkJson(['publish', img2, '--store', store, '--name', 'test', '--key', key, '--block-size', '16K']);
    expect(r2.version).toBe(2);
    expect(r2.previousVersion).toBe(1);
    expect(r2.blocks.new).toBe(novel.size);
    expect(r2.blocks.new).toBeLessThan(r2.blocks.unique / 2);
    expect((await reassemble(store, 'test', 2)).equals(b)).toBe(true);
    expect((await reassemble(store, 'test', 1)).equals(a)).toBe(true);

    // The manifest chain links v2 to v1 by digest.
    const m2 = decodeManifest(readFileSync(join(store, manifestPath('test', 2))), loadPublicKey(pub));
    expect(m2.header.previous?.version).toBe(1);

    const d = await hfkJson(['diff', '--store', store, 'test@1', 'test@2', '--key', pub]);
    expect(d.blocks.fetch).toBe(novel.size);
    expect(d.bytes.fetch).toBe(r2.bytes.written);
  });

  it('publishes the same image with every codec and block size into one store, sharing identical blocks', async () => {
    const dir = tempDir();
    makeTree(join(dir, 'tree'), 7);
    const img = mksquashfs(join(dir, 'tree'), join(dir, 'x.sqfs'));
    const store = join(dir, 'store');
    for (const [i, codec] of (['zstd', 'deflate', 'brotli', 'none'] as const).entries()) {
      const r = await hfkJson(['publish', img, '--store', store, '--name', `img-${codec}`, '--key', key, '--codec', codec, '--block-size', '4K']);
      expect(r.codec).toBe(codec);
      // The first codec writes every block; the others find them all already stored.
      expect(r.blocks.new).toBe(i === 0 ? r.blocks.unique : 0);
      expect((await reassemble(store, `img-${codec}`)).equals(readFileSync(img))).toBe(true);
    }
    const r = await hfkJson(['publish', img, '--store', store, '--name', 'big', '--key', key, '--block-size', '1M', '--codec', 'brotli']);
    expect(r.blockSize).toBe(1 << 20);
    expect((await reassemble(store, 'big')).equals(readFileSync(img))).toBe(true);
  });
});

describe('publishing an ext4 image and a cloop file', () => {
  it('publishes ext4 and the same image inside a cloop V2 file to identical blocks', async () => {
    const dir = tempDir();
    makeTree(join(dir, 'tree'), 3);
    const ext4 = mkext4(join(dir, 'tree'), join(dir, 'root.ext4'), 8);
    const cloop = mkcloop(ext4, join(dir, 'root.cloop'));
    const store = join(dir, 'store');
    const a = await hfkJson(['publish', ext4, '--store', store, '--name', 'plain', '--key', key]);
    expect(a.image.filesystem).toBe('ext4');
    expect(a.blocks.zero).toBeGreaterThan(0); // free space of the filesystem: no objects
    const b = await hfkJson(['publish', cloop, '--store', store, '--name', 'fromcloop', '--key', key]);
    expect(b.image.kind).toBe('cloop');
    expect(b.image.filesystem).toBe('ext4');
    expect(b.image.size).toBe(statSync(ext4).size); // 8 MiB is a multiple of the cloop block size
    expect(b.blocks.new).toBe(0); // every block already published from the plain image
    const sa = await LocalStore.open(store);
    const ma = (await readManifest(sa, 'plain', undefined, null)).manifest;
    const mb = (await readManifest(sa, 'fromcloop', undefined, null)).manifest;
    expect(mb.blocks).toEqual(ma.blocks);
    expect((await reassemble(store, 'fromcloop')).equals(readFileSync(ext4))).toBe(true);
  });
});

describe('bad input leaves the store exactly as it was', () => {
  let store: string;
  let img: string;
  let dir: string;
  beforeAll(async () => {
    dir = tempDirKeep();
    makeTree(join(dir, 'tree'), 11);
    img = mksquashfs(join(dir, 'tree'), join(dir, 'ok.sqfs'));
    store = join(dir, 'store');
    const r = await hfk(['publish', img, '--store', store, '--name', 'base', '--key', key]);
    expect(r.code, r.stderr).toBe(0);
  });
  afterAll(() => rmSync(dir, { recursive: true, force: true }));

  const cases: [string, () => string[], RegExp][] = [
    ['missing image', () => [join(dir, 'nope.sqfs')], /image .*nope.sqfs does not exist/],
    ['a folder as image', () => [join(dir, 'tree')], /is a folder; hfk publishes one image file/],
    ['empty image', () => [(writeFileSync(join(dir, 'empty.img'), ''), join(dir, 'empty.img'))], /image .*empty.img is empty/],
    ['public key instead of private', () => [img, '--key', pub], /is not a private key \(it is a public key\)/],
    ['missing key', () => [img, '--key', join(dir, 'none.key')], /private key file .*none.key does not exist[\s\S]*hfk keygen/],
    ['unknown codec', () => [img, '--codec', 'lzma'], /--codec must be one of zstd, deflate, brotli, none: got 'lzma'/],
    ['bad block size', () => [img, '--block-size', '48K'], /--block-size must be a power of two from 4K to 1M: got 49152/],
    ['block size too large', () => [img, '--block-size', '2M'], /--block-size must be a power of two/],
    ['unparsable block size', () => [img, '--block-size', 'big'], /--block-size must be a size like/],
    ['bad level', () => [img, '--level', '30'], /--level/],
    ['bad name', () => [img, '--name', '../evil'], /--name must be/],
  ];
  for (const [what, args, message] of cases) {
    it(what, async () => {
      const before = fingerprint(store);
      const a = args();
      const full = ['publish', ...a];
      if (!a.includes('--key')) full.push('--key', key);
      if (!a.includes('--name')) full.push('--name', 'base');
      full.push('--store', store);
      const r = await hfk(full);
      expect(r.code).not.toBe(0);
      expect(r.stderr).toMatch(message);
      expect(fingerprint(store)).toBe(before);
    });
  }

  it('a truncated cloop file', async () => {
    const cloop = mkcloop(img, join(dir, 'c.cloop'), 16384);
    const cut = join(dir, 'cut.cloop');
    cpSync(cloop, cut);
    truncateSync(cut, statSync(cloop).size - 5000);
    const before = fingerprint(store);
    const r = await hfk(['publish', cut, '--store', store, '--name', 'base', '--key', key]);
    expect(r.code).toBe(1);
    expect(r.stderr).toMatch(/cloop file cut.cloop is truncated/);
    expect(fingerprint(store)).toBe(before);
  });

  it('a corrupt cloop file (damaged block) publishes nothing, not even the good blocks before it', async () => {
    const cloop = mkcloop(img, join(dir, 'c2.cloop'), 16384);
    const bad = join(dir, 'bad.cloop');
    const bytes = readFileSync(cloop);
    const blocks = bytes.readUInt32BE(132);
    const lastStart = Number(bytes.readBigUInt64BE(136 + (blocks - 1) * 8));
    bytes.fill(0x41, lastStart + 2, lastStart + 40); // damage the last block's stream
    writeFileSync(bad, bytes);
    const before = fingerprint(store);
    const r = await hfk(['publish', bad, '--store', store, '--name', 'other', '--key', key, '--block-size', '4K']);
    expect(r.code).toBe(1);
    expect(r.stderr).toMatch(new RegExp(`block ${blocks - 1} does not inflate|block ${blocks - 1} inflates to`));
    expect(fingerprint(store)).toBe(before);
  });

  it('a cloop file of another version', async () => {
    const v4 = join(dir, 'v4.cloop');
    const bytes = readFileSync(mkcloop(img, join(dir, 'c3.cloop')));
    bytes.write('#V4.0 Format', 10, 'latin1');
    writeFileSync(v4, bytes);
    const r = await hfk(['publish', v4, '--store', store, '--name', 'base', '--key', key]);
    expect(r.code).toBe(1);
    expect(r.stderr).toMatch(/cloop V4.0 file; hfk reads cloop V2.0/);
  });

  it('a store that cannot be written', async () => {
    // Root ignores permission bits, so use a read-only mount.
    const ro = join(dir, 'ro');
    execFileSync('mkdir', ['-p', ro]);
    execFileSync('mount', ['-t', 'tmpfs', '-o', 'size=1M', 'tmpfs', ro]);
    try {
      execFileSync('mount', ['-o', 'remount,ro', ro]);
      const r = await hfk(['publish', img, '--store', ro, '--name', 'base', '--key', key]);
      expect(r.code).toBe(1);
      expect(r.stderr).toMatch(/store .*ro is not writable/);
      expect(readdirSync(ro)).toEqual([]);
      // a store folder still to be made there: the reason is the read-only filesystem (Node's recursive mkdir said ENOENT)
      const inside = await hfk(['publish', img, '--store', join(ro, 'st'), '--name', 'base', '--key', key]);
      expect(inside.code).toBe(1);
      expect(inside.stderr).toContain(`cannot create store folder ${join(ro, 'st')}: the filesystem is read-only`);
    } finally {
      execFileSync('umount', [ro]);
    }
  });

  it('a store on a full disk rolls back every object it wrote', async () => {
    const small = join(dir, 'small');
    execFileSync('mkdir', ['-p', small]);
    execFileSync('mount', ['-t', 'tmpfs', '-o', 'size=256k', 'tmpfs', small]);
    try {
      const big = join(dir, 'big.img');
      writeFileSync(big, pseudoRandom(4 << 20, 5));
      const r = await hfk(['publish', big, '--store', small, '--name', 'big', '--key', key]);
      expect(r.code).toBe(1);
      expect(r.stderr).toMatch(/ENOSPC|no space/i);
      // No block objects, no manifest, no pointer remain; only the empty skeleton.
      const left = execFileSync('find', [small, '-type', 'f']).toString().trim();
      expect(left).toBe('');
    } finally {
      execFileSync('umount', [small]);
    }
  });
});

describe('verify finds damage', () => {
  it('lists a corrupt block, a missing block and a tampered manifest, with exit status 1', async () => {
    const dir = tempDir();
    makeTree(join(dir, 'tree'), 21);
    const img = mksquashfs(join(dir, 'tree'), join(dir, 'x.sqfs'));
    const store = join(dir, 'store');
    await hfkJson(['publish', img, '--store', store, '--name', 'x', '--key', key]);
    const s = await LocalStore.open(store);
    const { manifest } = await readManifest(s, 'x', undefined, null);
    const [h1, h2] = [...manifest.objectSizes.keys()];
    const f1 = join(store, blockPath(h1!));
    const bytes = readFileSync(f1);
    bytes[bytes.length - 1]! ^= 0xff;
    writeFileSync(f1, bytes);
    rmSync(join(store, blockPath(h2!)));
    const r = await hfk(['verify', '--store', store, '--key', pub, '--json']);
    expect(r.code).toBe(1);
    const rep = JSON.parse(r.stdout);
    expect(rep.ok).toBe(false);
    expect(rep.problems).toEqual(
      expect.arrayContaining([
        expect.objectContaining({ kind: 'corrupt-block', block: h1 }),
        expect.objectContaining({ kind: 'missing-block', block: h2 }),
      ]),
    );
    // A manifest signed by someone else.
    const other = tempDir();
    await hfk(['keygen', '--out', join(other, 'o')]);
    const r2 = await hfk(['verify', '--store', store, '--key', join(other, 'o.pub')]);
    expect(r2.code).toBe(1);
    expect(r2.stdout).toMatch(/PROBLEM signature x v1: .*signed by key [0-9a-f]{16}, not by the pinned key/);
  });
});

describe('object digests (manifest format 2)', () => {
  it('signs the SHA-256 of every stored object; verify flags another encoding, which readers still accept; republishing repairs a damaged object', async () => {
    const dir = tempDir();
    makeTree(join(dir, 'tree'), 33);
    const img = mksquashfs(join(dir, 'tree'), join(dir, 'x.sqfs'));
    const store = join(dir, 'store');
    await hfkJson(['publish', img, '--store', store, '--name', 'x', '--key', key]);
    const bytes = readFileSync(join(store, manifestPath('x', 1)));
    expect(bytes.readUInt16LE(4)).toBe(2);
    const manifest = decodeManifest(bytes, loadPublicKey(pub));
    expect(manifest.objectDigests!.size).toBe(manifest.objectSizes.size);
    for (const [h, d] of manifest.objectDigests!) expect(objectDigest(readFileSync(join(store, blockPath(h)))), h).toBe(d);

    // Another valid encoding of one block (stored uncompressed): hfk verify names it, a reader accepts it.
    const i = manifest.blocks.findIndex((h) => h !== null);
    const h = manifest.blocks[i]!;
    const len = blockLength(manifest.header, i);
    const file = join(store, blockPath(h));
    const block = decodeBlockSync(readFileSync(file), len);
    writeFileSync(file, encodeBlock(block, 'none'));
    const v = await hfk(['verify', '--store', store, '--key', pub, '--json']);
    expect(v.code).toBe(1);
    expect(JSON.parse(v.stdout).problems).toEqual([expect.objectContaining({ kind: 'corrupt-block', block: h, message: expect.stringMatching(/decodes correctly, but its object has SHA-256/) })]);
    expect((await verifyObject('test', h, readFileSync(file), len, manifest.objectDigests!.get(h))).equals(block)).toBe(true);

    // A damaged object: a reader refuses it although the manifest names a digest; a republish writes it again.
    const damaged = readFileSync(file);
    damaged[damaged.length - 1]! ^= 0xff;
    writeFileSync(file, damaged);
    await expect(verifyObject('test', h, damaged, len, manifest.objectDigests!.get(h))).rejects.toThrow(/corrupt or forged/);
    const r = await hfkJson(['publish', img, '--store', store, '--name', 'x', '--key', key]);
    expect(r.blocks.new).toBe(1);
    expect(r).toMatchObject({ unchanged: true, version: 1 }); // the same image: the repaired object is the only write
    const m2 = decodeManifest(readFileSync(join(store, r.manifest)), loadPublicKey(pub));
    expect(objectDigest(readFileSync(file))).toBe(m2.objectDigests!.get(h));
    const v2 = await hfk(['verify', '--store', store, '--key', pub, '--name', 'x']);
    // v1 signs the first object's digest, which the repaired (recompressed) object has again
    expect(v2.code, v2.stdout).toBe(0);
  });
});

describe('gc', () => {
  it('--keep 1 removes the old version and its blocks, and never a referenced one', async () => {
    const dir = tempDir();
    const tree = join(dir, 'tree');
    makeTree(tree, 31);
    const store = join(dir, 'store');
    await hfkJson(['publish', mksquashfs(tree, join(dir, 'a.sqfs')), '--store', store, '--name', 'g', '--key', key]);
    writeFileSync(join(tree, 'usr/random.bin'), pseudoRandom(1_500_000, 32));
    await hfkJson(['publish', mksquashfs(tree, join(dir, 'b.sqfs')), '--store', store, '--name', 'g', '--key', key]);
    // A leftover of an interrupted publish.
    writeFileSync(join(store, 'blocks', '.tmp.leftover'), 'x');
    const dry = await hfkJson(['gc', '--store', store, '--keep', '1', '--dry-run']);
    expect(dry.blocksRemoved).toBeGreaterThan(0);
    expect(existsSync(join(store, manifestPath('g', 1)))).toBe(true);
    const r = await hfkJson(['gc', '--store', store, '--keep', '1']);
    expect(r.manifestsRemoved).toEqual([manifestPath('g', 1)]);
    expect(r.blocksRemoved).toBe(dry.blocksRemoved);
    expect(existsSync(join(store, manifestPath('g', 1)))).toBe(false);
    const v = await hfk(['verify', '--store', store, '--key', pub]);
    expect(v.code, v.stdout).toBe(0);
    // Without --keep nothing referenced goes.
    const again = await hfkJson(['gc', '--store', store]);
    expect(again.blocksRemoved).toBe(0);
    expect(existsSync(join(store, pointerPath('g')))).toBe(true);
  });

  it('refuses a folder that is not a store, and removes nothing from it', async () => {
    const dir = tempDir();
    mkdirSync(join(dir, 'blocks', 'ab'), { recursive: true });
    writeFileSync(join(dir, 'blocks', 'ab', 'notes.txt'), 'mine\n');
    const r = await hfk(['gc', '--store', dir]);
    expect(r.code).toBe(2);
    expect(r.stderr).toMatch(/has no images .*: not a store, or nothing published yet/);
    expect(readFileSync(join(dir, 'blocks', 'ab', 'notes.txt'), 'utf8')).toBe('mine\n');
  });
});

describe('hfk keygen', () => {
  it('refuses a folder as --out (the files would be hidden .key and .pub)', async () => {
    const dir = tempDir();
    const r = await hfk(['keygen', '--out', `${dir}/`]);
    expect(r.code).toBe(2);
    expect(r.stderr).toMatch(/is a folder, not a prefix/);
    expect(readdirSync(dir)).toEqual([]);
  });
});

describe('hfk serve and a store over HTTP', () => {
  it('verifies and diffs through the URL', async () => {
    const dir = tempDir();
    const tree = join(dir, 'tree');
    makeTree(tree, 41);
    const store = join(dir, 'store');
    await hfkJson(['publish', mksquashfs(tree, join(dir, 'a.sqfs')), '--store', store, '--name', 'web', '--key', key]);
    writeFileSync(join(tree, 'etc/hostname'), 'changed\n');
    await hfkJson(['publish', mksquashfs(tree, join(dir, 'b.sqfs')), '--store', store, '--name', 'web', '--key', key]);
    const srv = hfkSpawn(['serve', '--store', store, '--port', '0', '--quiet']);
    try {
      const [, url] = await waitForLine(srv, /serving .* at (http:\/\/\S+)/);
      const v = await hfkJson(['verify', '--store', url!, '--name', 'web', '--key', pub]);
      expect(v.ok).toBe(true);
      expect(v.images[0].versions).toEqual([1, 2]);
      const d = await hfkJson(['diff', '--store', url!, 'web@1', 'web']);
      expect(d.to).toBe(2);
      expect(d.blocks.fetch).toBeGreaterThan(0);
      const noName = await hfk(['verify', '--store', url!, '--key', pub]);
      expect(noName.code).toBe(2);
      expect(noName.stderr).toMatch(/cannot be listed: give --name NAME/);
      const res = await fetch(`${url}images/web/latest.json`);
      expect(res.headers.get('cache-control')).toMatch(/max-age=5/);
      const blk = await fetch(`${url}images/web/v1.hfkm`);
      expect(blk.headers.get('cache-control')).toMatch(/immutable/);
      // A second server on the same port: the option to change, named.
      const port = new URL(url!).port;
      const taken = await hfk(['serve', '--store', store, '--port', port]);
      expect(taken.code).toBe(2);
      expect(taken.stderr).toContain(`--port ${port}: 127.0.0.1:${port} is in use`);
    } finally {
      srv.kill('SIGTERM');
    }
    // --json: one line a script can read, with the port picked.
    const js = hfkSpawn(['serve', '--store', store, '--port', '0', '--quiet', '--json']);
    try {
      const [, line] = await waitForLine(js, /^(\{.*\})\n/);
      const j = JSON.parse(line!);
      expect(j.port).toBeGreaterThan(0);
      expect(j.url).toBe(`http://127.0.0.1:${j.port}/`);
      expect(j.store).toBe(store);
      const res = await fetch(`${j.url}images/web/latest.json`);
      expect(res.status).toBe(200);
    } finally {
      js.kill('SIGTERM');
    }
  });
});

describe('--help', () => {
  for (const cmd of ['keygen', 'publish', 'verify', 'diff', 'gc', 'serve']) {
    it(`hfk ${cmd} --help`, async () => {
      const r = await hfk([cmd, '--help']);
      expect(r.code).toBe(0);
      expect(r.stdout).toMatch(new RegExp(`^Usage: hfk ${cmd} `));
      expect(r.stdout).toMatch(/--help/);
    });
  }
  it('an unknown option names itself and points at --help', async () => {
    const r = await hfk(['publish', 'x', '--colour']);
    expect(r.code).toBe(2);
    expect(r.stderr).toMatch(/^hfk publish: Unknown option '--colour'\n/); // the command named once
    expect(r.stderr).toMatch(/hfk publish --help/);
  });
  it('a value that looks like an option gets the fix on one line', async () => {
    const r = await hfk(['publish', 'x', '--level', '-1']);
    expect(r.code).toBe(2);
    expect(r.stderr).toBe("hfk publish: --level needs a value, and '-1' looks like an option\n  hint: a value that starts with '-' goes after '=': --level=-1\n");
  });
});
