import { mkdtempSync, readFileSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { zstdDecompressSync } from 'node:zlib';
import { afterAll, describe, expect, it } from 'vitest';
import { type CommandContext, type Output, parseCommandArgs } from '../src/cli/command.ts';
import { HfkError } from '../src/errors.ts';
import { generateKeyPair } from '../src/format/keys.ts';
import { findKernel } from '../test/lab/qemu.ts';
import type { BuildReport } from './build.ts';
import { parseNewc } from './cpio.ts';
import { bakeConfig, mkinitrdCommand, resolveInit } from './cli.ts';

const work = mkdtempSync(join(tmpdir(), 'hfk-mkinitrd-cli-'));
afterAll(() => rmSync(work, { recursive: true, force: true }));

const pair = generateKeyPair('test');
const pubFile = join(work, 'k.pub');
writeFileSync(pubFile, pair.publicLine);

function io(): Output & { stdout: string; stderr: string } {
  const o = { stdout: '', stderr: '', tty: false, out: (t: string) => void (o.stdout += t), err: (t: string) => void (o.stderr += t) };
  return o;
}

async function run(argv: string[]): Promise<{ code: number; out: ReturnType<typeof io> }> {
  const parsed = parseCommandArgs('hfk', mkinitrdCommand, argv);
  if (parsed === 'help') throw new Error('help');
  const out = io();
  const code = await mkinitrdCommand.run({ ...(parsed as Omit<CommandContext, 'io'>), io: out });
  return { code, out };
}

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
});

describe('hfk mkinitrd', () => {
  const kernel = findKernel();

  it('builds an initramfs with the init bundle, config and key baked in, and reports sizes as JSON', async () => {
    const init = join(work, 'hfk-init.mjs');
    writeFileSync(init, "#!/usr/bin/env node\nconsole.log('init');\n");
    const out = join(work, 'initrd.img');
    const r = await run(['--modules', kernel.modulesDir, '--out', out, '--init', init, '--key', pubFile, '--mirrors', 'http://10.0.2.100/,http://10.0.2.101/', '--image', 'debian', '--level', '1', '--json']);
    expect(r.code).toBe(0);
    const report = JSON.parse(r.out.stdout) as BuildReport;
    expect(report.compression).toEqual({ kind: 'zstd', level: 1 });
    expect(report.kernel.version).toBe(kernel.version);
    const files = new Map(parseNewc(zstdDecompressSync(readFileSync(out))).map((e) => [e.name, e]));
    expect(files.get('init')!.data.toString()).toBe("#!/usr/bin/node\nconsole.log('init');\n");
    expect(files.get('init')!.mode & 0o777).toBe(0o755);
    expect(files.get('etc/hfk/hfk.yaml')!.data.toString()).toBe('image: debian\nmirrors:\n  - http://10.0.2.100/\n  - http://10.0.2.101/\nkey: /etc/hfk/hfk.pub\n');
    expect(files.get('etc/hfk/hfk.pub')!.data.toString().split(' ')[1]).toBe(pair.publicLine.split(' ')[1]);
    expect(files.has(`lib/modules/${kernel.version}/modules.dep`)).toBe(true);
  });

  it('finds the init bundle next to itself or in the checkout, and says how to build it when it is missing', () => {
    const here = new URL('.', import.meta.url).pathname; // mkinitrd/ (dist/ when bundled)
    expect(resolveInit(undefined, (p) => p === `${here}hfk-init.mjs`)).toBe(`${here}hfk-init.mjs`);
    expect(resolveInit(undefined, (p) => p.endsWith('/dist/hfk-init.mjs'))).toMatch(/\/dist\/hfk-init\.mjs$/);
    const e = (() => {
      try {
        return resolveInit(undefined, () => false);
      } catch (x) {
        return x;
      }
    })();
    expect(e).toBeInstanceOf(HfkError);
    expect((e as HfkError).message).toBe(`the init bundle ${here}hfk-init.mjs does not exist`);
    expect((e as HfkError).hint).toMatch(/npm run build/);
    expect(resolveInit('/x.mjs', () => true)).toBe('/x.mjs');
  });

  it('refuses a missing --init and bad options', async () => {
    const missing = join(work, 'nope', 'hfk-init.mjs');
    await expect(run(['--modules', kernel.modulesDir, '--out', join(work, 'x.img'), '--init', missing])).rejects.toThrow(`the init bundle ${missing} does not exist`);
    const init = join(work, 'hfk-init.mjs');
    await expect(run(['--modules', kernel.modulesDir, '--out', join(work, 'x.img'), '--init', init, '--compress', 'xz'])).rejects.toThrow(/--compress must be one of zstd, gzip: got 'xz'/);
    await expect(run(['--modules', kernel.modulesDir, '--out', join(work, 'x.img'), '--init', init, '--compress', 'gzip', '--level', '12'])).rejects.toThrow(/--level must be a whole number from 1 to 9: got '12'/);
    await expect(run(['--out', join(work, 'x.img')])).rejects.toThrow(/--modules is required/);
  });
});
