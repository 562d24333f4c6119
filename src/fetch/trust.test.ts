import { mkdirSync, readFileSync, writeFileSync } from 'node:fs';
import { join } from 'node:path';
import { describe, expect, it } from 'vitest';
import { tempDir } from '../../test/helpers/tmp.ts';
import { HfkError, MissingError, RollbackError } from '../errors.ts';
import { generateKeyPair } from '../format/keys.ts';
import { Mirror } from '../source/mirror.ts';
import { MemoryOrigin } from '../source/testing/memory.ts';
import { ImageOpener, openMirrors } from './open.ts';
import { newKey, signedImage } from './testing/images.ts';
import { loadImage, TrustState } from './trust.ts';

describe('loadImage: what it reports when no mirror can give the manifest', () => {
  it('decides by the kind of absence, not by the words of the message (a folder named like one)', async () => {
    // A store folder whose path reads like the "has no version" message of a missing version.
    const dir = join(tempDir('hfk-trust-'), 'a has no version 3 b');
    mkdirSync(dir, { recursive: true });
    const set = openMirrors([dir]);
    try {
      const e = await loadImage({ name: 't', version: undefined, key: generateKeyPair().publicKey, mirrors: set.mirrors, trust: TrustState.memory() }).catch((x: unknown) => x);
      expect(e).toBeInstanceOf(MissingError);
      expect((e as Error).message).toMatch(/^no mirror has image 't'/);
    } finally {
      await set.close();
    }
  });
});

describe('TrustState: a damaged rollback state is refused, never reset', () => {
  const NAME = 'demo';
  const key = newKey();

  /** An opener over one in-memory mirror serving `files`, keeping its trust state in `trustFile`. */
  function opener(files: Map<string, Buffer>, trustFile: string): ImageOpener {
    const o = new ImageOpener({ mirrors: [], name: NAME, key: key.publicKey, trustFile });
    const origin = new MemoryOrigin('mem://mirror/');
    for (const [k, v] of files) origin.files.set(k, v);
    o.mirrors = [new Mirror('mem://mirror/', origin)];
    return o;
  }

  const damaged: [string, (file: string) => void, RegExp][] = [
    ['cut short', (f) => writeFileSync(f, '{"format":"hfk-trust/1","images":{"demo":{"keyId"'), /is not JSON/],
    ['empty', (f) => writeFileSync(f, ''), /is empty/],
    ['of another shape', (f) => writeFileSync(f, JSON.stringify({ format: 'hfk-trust/1', images: { demo: { version: 'five' } } })), /is not an hfk trust state/],
    ['binary junk', (f) => writeFileSync(f, Buffer.from([0xff, 0x00, 0x13, 0x37])), /is not JSON/],
  ];
  for (const [what, damage, why] of damaged) {
    it(`refuses a state file ${what} with E_TRUST_STATE, naming the file and the fix, and leaves it as it was`, async () => {
      const file = join(tempDir('hfk-trust-'), 'trust.json');
      damage(file);
      const before = readFileSync(file);
      const e = await TrustState.open(file).catch((x: unknown) => x);
      expect(e).toBeInstanceOf(HfkError);
      expect(e).toMatchObject({ code: 'E_TRUST_STATE' });
      expect((e as Error).message).toMatch(why);
      expect((e as Error).message).toContain(file);
      expect((e as HfkError).hint).toContain(`rm -- '${file}'`);
      expect(readFileSync(file).equals(before)).toBe(true);
    });
  }

  it('refuses an unreadable state (a folder in its place)', async () => {
    const file = join(tempDir('hfk-trust-'), 'trust.json');
    mkdirSync(file);
    await expect(TrustState.open(file)).rejects.toMatchObject({ code: 'E_TRUST_STATE', message: expect.stringMatching(/cannot be read/) });
  });

  it('does not load a stale v1 over a damaged state, and does not rewrite the file', async () => {
    const file = join(tempDir('hfk-trust-'), 'trust.json');
    writeFileSync(file, '{"format":"hfk-trust/1","images":{"demo":{"keyId":"0123456789abcdef","version":5,');
    const before = readFileSync(file);
    const o = opener(signedImage(NAME, 1, key).files, file);
    try {
      await expect(o.load()).rejects.toMatchObject({ code: 'E_TRUST_STATE' });
      expect(o.image).toBeUndefined();
      expect(readFileSync(file).equals(before)).toBe(true);
    } finally {
      await o.close();
    }
  });

  it('starts a missing state on first use, records the version loaded, and then refuses an older one', async () => {
    const file = join(tempDir('hfk-trust-'), 'state', 'trust.json');
    const first = opener(signedImage(NAME, 4, key).files, file);
    try {
      expect((await first.load()).manifest.header.version).toBe(4);
    } finally {
      await first.close();
    }
    const saved = JSON.parse(readFileSync(file, 'utf8')) as { images: Record<string, { version: number; keyId: string }> };
    expect(saved.images[NAME]).toMatchObject({ version: 4, keyId: key.publicKey.id });
    const stale = opener(signedImage(NAME, 2, key).files, file);
    try {
      await expect(stale.load()).rejects.toBeInstanceOf(RollbackError);
    } finally {
      await stale.close();
    }
    expect(JSON.parse(readFileSync(file, 'utf8'))).toEqual(saved);
  });
});
