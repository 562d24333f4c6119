import { mkdirSync } from 'node:fs';
import { join } from 'node:path';
import { describe, expect, it } from 'vitest';
import { tempDir } from '../../test/helpers/tmp.ts';
import { MissingError } from '../errors.ts';
import { generateKeyPair } from '../format/keys.ts';
import { openMirrors } from './open.ts';
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
