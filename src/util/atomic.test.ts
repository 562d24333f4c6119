import { randomBytes } from 'node:crypto';
import { mkdirSync, mkdtempSync, readdirSync, readFileSync, rmSync, statSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { afterAll, describe, expect, it } from 'vitest';
import { tempPathFor, TMP_PREFIX, writeFileAtomic, writeFileAtomicSync } from './atomic.ts';

const root = mkdtempSync(join(tmpdir(), 'hfk-atomic-'));
afterAll(() => rmSync(root, { recursive: true, force: true }));
let n = 0;
const freshDir = () => {
  const d = join(root, String(n++));
  mkdirSync(d);
  return d;
};

describe.each([
  ['writeFileAtomic', (f: string, d: string | Uint8Array, o?: { fsync?: boolean; mode?: number }) => writeFileAtomic(f, d, o)],
  ['writeFileAtomicSync', async (f: string, d: string | Uint8Array, o?: { fsync?: boolean; mode?: number }) => writeFileAtomicSync(f, d, o)],
])('%s', (_name, write) => {
  it('writes the whole file and leaves no temporary file', async () => {
    const dir = freshDir();
    const data = randomBytes(3 << 20);
    await write(join(dir, 'a.bin'), data);
    expect(readFileSync(join(dir, 'a.bin')).equals(data)).toBe(true);
    await write(join(dir, 'b.txt'), 'text\n', { fsync: true });
    expect(readFileSync(join(dir, 'b.txt'), 'utf8')).toBe('text\n');
    expect(readdirSync(dir).sort()).toEqual(['a.bin', 'b.txt']);
  });

  it('replaces an existing file whole', async () => {
    const dir = freshDir();
    writeFileSync(join(dir, 'f'), 'old contents, longer than the new');
    await write(join(dir, 'f'), 'new');
    expect(readFileSync(join(dir, 'f'), 'utf8')).toBe('new');
    expect(readdirSync(dir)).toEqual(['f']);
  });

  it('gives the file the mode asked for, less the umask', async () => {
    const dir = freshDir();
    await write(join(dir, 'f'), 'x', { mode: 0o640 });
    expect(statSync(join(dir, 'f')).mode & 0o777).toBe(0o640 & ~process.umask());
  });

  it('removes its temporary file when the rename fails, and keeps what was there', async () => {
    const dir = freshDir();
    mkdirSync(join(dir, 'taken'));
    writeFileSync(join(dir, 'taken', 'inside'), 'kept');
    await expect(write(join(dir, 'taken'), 'data')).rejects.toMatchObject({ code: expect.stringMatching(/^(EISDIR|ENOTEMPTY|EEXIST)$/) });
    expect(readdirSync(dir)).toEqual(['taken']);
    expect(readFileSync(join(dir, 'taken', 'inside'), 'utf8')).toBe('kept');
  });

  it('removes its temporary file when the write fails', async () => {
    const dir = freshDir();
    await expect(write(join(dir, 'f'), 42 as unknown as string)).rejects.toThrow();
    expect(readdirSync(dir)).toEqual([]);
  });

  it('fails in a folder that does not exist, creating nothing', async () => {
    const dir = freshDir();
    await expect(write(join(dir, 'missing', 'f'), 'x')).rejects.toMatchObject({ code: 'ENOENT' });
    expect(readdirSync(dir)).toEqual([]);
  });
});

describe('writeFileAtomic', () => {
  it('concurrent writers: the file is one of them, whole', async () => {
    const dir = freshDir();
    const versions = Array.from({ length: 8 }, () => randomBytes(1 << 20));
    await Promise.all(versions.map((v) => writeFileAtomic(join(dir, 'f'), v)));
    const got = readFileSync(join(dir, 'f'));
    expect(versions.some((v) => v.equals(got))).toBe(true);
    expect(readdirSync(dir)).toEqual(['f']);
  });

  it('names its temporary file beside the destination, with the prefix a sweep looks for', () => {
    const t = tempPathFor('/store/blocks/ab/abcdef');
    expect(t.startsWith(`/store/blocks/ab/${TMP_PREFIX}abcdef.${process.pid}.`)).toBe(true);
    expect(tempPathFor('/x/f')).not.toBe(tempPathFor('/x/f'));
  });
});
