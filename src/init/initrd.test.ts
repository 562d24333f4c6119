import { execFileSync } from 'node:child_process';
import { mkdirSync, mkdtempSync, readFileSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import * as zlib from 'node:zlib';
import { describe, expect, it, onTestFinished } from 'vitest';
import { readInitrd } from './initrd.ts';

describe('reading an initrd', () => {
  it('reads what GNU cpio wrote, raw, gzip and zstd', () => {
    const dir = mkdtempSync(join(tmpdir(), 'hfk-initrd-'));
    onTestFinished(() => rmSync(dir, { recursive: true, force: true }));
    onTestFinished(() => rmSync(`${dir}.cpio`, { force: true }));
    mkdirSync(join(dir, 'etc/hfk'), { recursive: true });
    writeFileSync(join(dir, 'etc/hfk/hfk.yaml'), 'image: debian\n');
    writeFileSync(join(dir, 'init'), '#!/bin/sh\n');
    execFileSync('sh', ['-c', `cd ${dir} && find . | sort | cpio -o -H newc --quiet > ${dir}.cpio`]);
    const raw = readFileSync(`${dir}.cpio`);
    for (const bytes of [raw, zlib.gzipSync(raw), zlib.zstdCompressSync(raw)]) {
      const files = readInitrd(bytes, 'test initrd');
      expect(files.get('etc/hfk/hfk.yaml')!.data.toString()).toBe('image: debian\n');
      expect(files.get('init')!.data.toString()).toBe('#!/bin/sh\n');
      expect(files.get('etc')!.mode & 0o170000).toBe(0o040000);
    }
  });
  it('names what it cannot read', () => {
    expect(() => readInitrd(Buffer.from('hello world'), 'x.img')).toThrow(/x.img is not an initramfs/);
    expect(() => readInitrd(Buffer.from(`070701${'0'.repeat(200)}`), 'y.img')).toThrow(/y.img/);
  });
});
