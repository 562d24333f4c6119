import { mkdtempSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { afterAll, describe, expect, it } from 'vitest';
import { generateKeyPair } from '../format/keys.ts';
import { bakeConfig, entrySettings, missingSettings } from './bake.ts';

const work = mkdtempSync(join(tmpdir(), 'hfk-mkinitrd-bake-'));
afterAll(() => rmSync(work, { recursive: true, force: true }));

const pair = generateKeyPair('test');
writeFileSync(join(work, 'k.pub'), pair.publicLine);

describe('bakeConfig', () => {
  it('writes image, mirrors and the key path as YAML the init accepts', () => {
    const b = bakeConfig({ image: 'debian@3', mirrors: ['http://10.0.2.100/', 'https://m2.example/hfk'], publicKey: pair.publicLine });
    expect(b.config).toBe('image: debian@3\nmirrors:\n  - http://10.0.2.100/\n  - https://m2.example/hfk\nkey: /etc/hfk/hfk.pub\n');
    expect(b.publicKey).toBe(pair.publicLine);
  });

  it('keeps a base config with its comments, replaces the keys given, and bakes a key file it names', () => {
    const base = join(work, 'base.yaml');
    const text = `# site config\nimage: old\nmirrors: [http://old.example/]\nkey: k.pub # next to this file\ninit:\n  timeout: 5\n`;
    const b = bakeConfig({ base: { text, path: base }, mirrors: ['http://new.example/'] });
    expect(b.config).toMatch(/^# site config\nimage: old\nmirrors:\n  - http:\/\/new.example\/\nkey: \/etc\/hfk\/hfk.pub # next to this file\ninit:\n  timeout: 5\n$/);
    expect(b.publicKey).toMatch(/^hfk-ed25519 [A-Za-z0-9+/]{43}= hfk\n$/);
    // an inline key stays inline
    const inline = `key: ${pair.publicLine.split(' ')[1]}\n`;
    expect(bakeConfig({ base: { text: inline, path: base } })).toEqual({ config: inline, publicKey: undefined });
  });

  it("refuses what the init's config schema refuses, naming the key", () => {
    expect(() => bakeConfig({ mirrors: ['ftp://x/'] })).toThrow(/mirrors\[0\]: 'ftp:\/\/x\/' is not an http:\/\/ or https:\/\/ URL/);
    expect(() => bakeConfig({ image: 'no spaces allowed' })).toThrow(/image: 'no spaces allowed' is not NAME or NAME@VERSION/);
    expect(() => bakeConfig({ base: { text: 'imgae: x\n', path: 'site.yaml' } })).toThrow(/unknown key 'imgae'/);
    expect(() => bakeConfig({ base: { text: '- a\n- b\n', path: 'site.yaml' } })).toThrow(/site.yaml must be a YAML mapping/);
    expect(() => bakeConfig({ base: { text: 'a: [\n', path: 'site.yaml' } })).toThrow(/site.yaml is not valid YAML/);
  });

  it('says which settings the boot must then get from the kernel command line', () => {
    expect(missingSettings(bakeConfig({})).map((m) => m.param)).toEqual(['hfk.image=', 'hfk.mirrors=', 'hfk.key=']);
    expect(missingSettings(bakeConfig({ image: 'debian', publicKey: pair.publicLine })).map((m) => m.option)).toEqual(['--mirrors']);
    expect(missingSettings(bakeConfig({ base: { text: `key: ${pair.publicLine.split(' ')[1]}\n`, path: 'site.yaml' }, image: 'd', mirrors: ['http://m/'] }))).toEqual([]); // an inline key
    expect(missingSettings(bakeConfig({ base: { text: 'mirrorlist: http://lists.example/mirrors.txt\n', path: 'site.yaml' }, image: 'd', publicKey: pair.publicLine }))).toEqual([]); // mirrors from a list
  });

  it('takes hfk.image= and hfk.mirrors= from the baked config', () => {
    expect(entrySettings(bakeConfig({ image: 'debian@3', mirrors: ['http://10.0.2.100', 'https://m.example/hfk'] }).config)).toEqual({
      image: 'debian@3',
      mirrors: ['http://10.0.2.100/', 'https://m.example/hfk/'],
    });
    expect(entrySettings('')).toEqual({ mirrors: [] });
  });
});
