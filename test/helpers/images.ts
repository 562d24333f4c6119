// Real filesystem images for tests, made by the real tools (mksquashfs,
// mkfs.ext4, create_compressed_fs). A missing tool is an error that says
// what to install, never a silent skip.

import { execFile, execFileSync } from 'node:child_process';
import { createHash } from 'node:crypto';
import { chmodSync, mkdirSync, readdirSync, readFileSync, readlinkSync, lstatSync, symlinkSync, writeFileSync } from 'node:fs';
import { join, relative } from 'node:path';

export function requireTool(tool: string, pkg: string): void {
  try {
    execFileSync('sh', ['-c', `command -v ${tool}`], { stdio: 'ignore' });
  } catch {
    throw new Error(`${tool} is not installed: apt-get install ${pkg} (.ci/run installs it)`);
  }
}

/** Deterministic pseudo-random bytes (xorshift), so trees are reproducible. */
export function pseudoRandom(n: number, seed: number): Buffer {
  const b = Buffer.allocUnsafe(n);
  let x = seed >>> 0 || 1;
  for (let i = 0; i < n; i++) {
    x ^= x << 13;
    x ^= x >>> 17;
    x ^= x << 5;
    b[i] = x & 0xff;
  }
  return b;
}

/**
 * A small but varied tree: text and binary files of many sizes (empty,
 * tiny, > 1 MiB, highly compressible), nested folders, symlinks, modes.
 */
export function makeTree(dir: string, seed = 1): void {
  mkdirSync(join(dir, 'etc/hfk'), { recursive: true });
  mkdirSync(join(dir, 'usr/share/doc'), { recursive: true });
  mkdirSync(join(dir, 'var/empty'), { recursive: true });
  writeFileSync(join(dir, 'etc/hostname'), 'hfk-test\n');
  writeFileSync(join(dir, 'etc/hfk/empty'), '');
  writeFileSync(join(dir, 'usr/share/doc/readme.txt'), 'HTTP-FUSE KNOPPIX boots from anywhere.\n'.repeat(5000));
  writeFileSync(join(dir, 'usr/random.bin'), pseudoRandom(1_500_000, seed));
  writeFileSync(join(dir, 'usr/zeros.bin'), Buffer.alloc(300_000));
  // Period 4096: every image block inside it repeats the one before (dedup).
  writeFileSync(join(dir, 'usr/periodic.bin'), Buffer.concat(Array.from({ length: 100 }, () => pseudoRandom(4096, seed + 100))));
  for (let i = 0; i < 40; i++) writeFileSync(join(dir, `usr/share/doc/f${i}`), pseudoRandom(100 + i * 997, seed + i));
  writeFileSync(join(dir, 'usr/run.sh'), '#!/bin/sh\necho hi\n');
  chmodSync(join(dir, 'usr/run.sh'), 0o755);
  chmodSync(join(dir, 'etc/hostname'), 0o600);
  symlinkSync('../usr/share/doc/readme.txt', join(dir, 'etc/readme'));
  symlinkSync('/nonexistent/target', join(dir, 'usr/dangling'));
}

export function mksquashfs(src: string, out: string, extra: string[] = []): string {
  requireTool('mksquashfs', 'squashfs-tools');
  execFileSync('mksquashfs', [src, out, '-noappend', '-all-root', '-no-progress', '-quiet', '-mkfs-time', '0', '-all-time', '0', ...extra], { stdio: 'ignore' });
  return out;
}

export function mkext4(src: string, out: string, sizeMiB = 16): string {
  requireTool('mkfs.ext4', 'e2fsprogs');
  execFileSync('mkfs.ext4', ['-q', '-F', '-d', src, '-E', 'root_owner=0:0', '-U', 'clear', '-T', 'default', out, `${sizeMiB}M`], {
    stdio: 'ignore',
    env: { ...process.env, E2FSPROGS_FAKE_TIME: '1', SOURCE_DATE_EPOCH: '1' },
  });
  return out;
}

export function mkcloop(image: string, out: string, blockSize = 65536): string {
  requireTool('create_compressed_fs', 'cloop-utils');
  execFileSync('create_compressed_fs', ['-q', '-B', String(blockSize), image, out], { stdio: 'ignore' });
  return out;
}

export interface TreeEntry {
  type: 'file' | 'dir' | 'symlink';
  mode: number;
  sha256?: string;
  target?: string;
}

/** Path → (type, permission bits, content hash or link target) for every entry. */
export function snapshotTree(root: string): Map<string, TreeEntry> {
  const out = new Map<string, TreeEntry>();
  const walk = (dir: string) => {
    for (const name of readdirSync(dir).sort()) {
      const p = join(dir, name);
      const st = lstatSync(p);
      const rel = relative(root, p);
      if (name === 'lost+found') continue;
      if (st.isSymbolicLink()) out.set(rel, { type: 'symlink', mode: 0, target: readlinkSync(p) });
      else if (st.isDirectory()) {
        out.set(rel, { type: 'dir', mode: st.mode & 0o7777 });
        walk(p);
      } else out.set(rel, { type: 'file', mode: st.mode & 0o7777, sha256: createHash('sha256').update(readFileSync(p)).digest('hex') });
    }
  };
  walk(root);
  return out;
}

/** SHA-256 of every file under a folder, to prove a command changed nothing. */
export function fingerprint(root: string): string {
  const h = createHash('sha256');
  for (const [p, e] of snapshotTree(root)) h.update(`${p}\0${e.type}\0${e.mode}\0${e.sha256 ?? e.target ?? ''}\n`);
  return h.digest('hex');
}

/**
 * Type, permission bits, symlink target and SHA-256 of every entry under
 * `root`, listed by a child process (find + sha256sum): for trees on a FUSE
 * mount whose server may live in this very process, so its event loop must
 * never block on a syscall against the mount.
 */
export function treeListing(root: string): Promise<string> {
  const script = `cd "$1" && find . -path ./lost+found -prune -o -printf '%y %m %p -> %l\\n' | LC_ALL=C sort && find . -path ./lost+found -prune -o -type f -print0 | LC_ALL=C sort -z | xargs -0 -r sha256sum`;
  return new Promise((resolve, reject) => {
    execFile('sh', ['-c', script, 'sh', root], { maxBuffer: 64 << 20 }, (e, out) => (e ? reject(e) : resolve(out)));
  });
}
