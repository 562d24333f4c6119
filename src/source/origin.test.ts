import { writeFileSync } from 'node:fs';
import { join } from 'node:path';
import { describe, expect, it } from 'vitest';
import { tempDir } from '../../test/helpers/tmp.ts';
import { InputError, MissingError } from '../errors.ts';
import { H1Origin } from '../store/h1.ts';
import { HttpOrigin } from '../store/http.ts';
import { LocalStore } from '../store/local.ts';
import { clientFor, normalizeLocation, Origins } from './origin.ts';

describe('Origins: which client reads a location', () => {
  it.each([
    ['http://m.example/hfk/', undefined, 'hfk'],
    ['https://m.example/hfk/', undefined, 'undici'],
    ['http://m.example/hfk/', 'http://squid:3128', 'undici'],
    ['/srv/hfk', undefined, 'folder'],
    ['/srv/hfk', 'http://squid:3128', 'folder'],
  ] as const)('%s via proxy %s → %s', (location, proxy, client) => {
    expect(clientFor(location, proxy)).toBe(client);
  });

  it('opens each with its client, sharing one undici dispatcher', async () => {
    const o = new Origins({ proxy: 'http://127.0.0.1:9' });
    const plain = new Origins();
    try {
      expect(plain.open('http://127.0.0.1:9/a')).toBeInstanceOf(H1Origin);
      expect(o.open('http://127.0.0.1:9/a')).toBeInstanceOf(HttpOrigin);
      expect(o.open('https://127.0.0.1:9/b')).toBeInstanceOf(HttpOrigin);
      expect(o.open('/srv')).toBeInstanceOf(LocalStore);
      expect(normalizeLocation('http://m.example/hfk')).toBe('http://m.example/hfk/');
      expect(normalizeLocation('file:///srv/hfk/')).toBe('/srv/hfk');
    } finally {
      await o.close();
      await plain.close();
    }
  });

  it('reads a single file by its full location: a path, or a missing one with a clear error', async () => {
    const dir = tempDir('hfk-origin-');
    writeFileSync(join(dir, 'list.txt'), 'http://m.example/\n');
    const o = new Origins();
    try {
      expect((await o.readFile(join(dir, 'list.txt'))).toString()).toBe('http://m.example/\n');
      await expect(o.readFile(join(dir, 'nope.txt'))).rejects.toThrow(MissingError);
      await expect(o.readFile(join(dir, 'nope.txt'))).rejects.toThrow(/nope\.txt does not exist/);
      await expect(o.readFile('http://m.example/dir/')).rejects.toThrow(InputError);
    } finally {
      await o.close();
    }
  });
});
