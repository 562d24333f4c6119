import { mkdtempSync, readFileSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { afterAll, describe, expect, test } from 'vitest';
import { Config, ConfigError, defaultConfig, formatMountSource, loadConfig, MirrorListError, MountSourceText, parseConfig, parseMirrorList } from './config.ts';

const KEY = 'A'.repeat(42) + 'E=';
const EXAMPLE = new URL('../../config/hfk.yaml', import.meta.url).pathname;

function configError(text: string, file = 'hfk.yaml'): ConfigError {
  try {
    parseConfig(text, file);
  } catch (e) {
    expect(e).toBeInstanceOf(ConfigError);
    return e as ConfigError;
  }
  throw new Error(`expected ${JSON.stringify(text)} to be refused`);
}

describe('parseConfig', () => {
  test('an empty file gives every default', () => {
    const d = {
      mirrors: [],
      cache: { memory: 256 * 2 ** 20, maxSize: 4 * 2 ** 30 },
      init: { cache: { kind: 'tmpfs' }, overlay: { kind: 'tmpfs' }, timeout: 30, modules: [], reader: { readahead: 512 * 2 ** 10, verifyThreads: 0, cpuProfile: false } },
      fetch: { soft: false, softTimeout: 60, headTimeout: 20, minRate: 1024, rateGrace: 10 },
    };
    expect(parseConfig('', 'x.yaml')).toEqual(d);
    expect(parseConfig('# only comments\n', 'x.yaml')).toEqual(d);
    expect(defaultConfig()).toEqual(d);
  });

  test('every field', () => {
    const c = parseConfig(
      [
        'image: debian-12@4',
        'mirrors:',
        '  - http://10.0.2.2:8080/hfk',
        '  - https://m.example.org/',
        'mirrorlist: mirrors.txt',
        'proxy: http://proxy:3128',
        'key: keys/hfk.pub',
        'cache:',
        '  memory: 64M',
        '  dir: cache',
        '  maxSize: 10G',
        'init:',
        '  cache: /dev/vdb',
        '  overlay: UUID=0A1B-2C3D',
        '  timeout: 120',
        '  modules: [e1000e, mlx4-en]',
        '  break: mirrors',
        '  reader:',
        '    readahead: 1M',
        '    prefetch: 0',
        '    verifyThreads: 2',
        '    cpuProfile: true',
        'fetch:',
        '  soft: true',
        '  softTimeout: "15"',
      ].join('\n'),
      '/etc/hfk/hfk.yaml',
    );
    expect(c).toEqual({
      image: { name: 'debian-12', version: 4 },
      mirrors: ['http://10.0.2.2:8080/hfk/', 'https://m.example.org/'],
      mirrorlist: '/etc/hfk/mirrors.txt',
      proxy: 'http://proxy:3128',
      key: '/etc/hfk/keys/hfk.pub',
      cache: { memory: 64 * 2 ** 20, dir: '/etc/hfk/cache', maxSize: 10 * 2 ** 30 },
      init: {
        cache: { kind: 'device', path: '/dev/vdb' },
        overlay: { kind: 'uuid', uuid: '0a1b-2c3d' },
        timeout: 120,
        modules: ['e1000e', 'mlx4_en'],
        break: 'mirrors',
        reader: { readahead: 2 ** 20, prefetch: 0, verifyThreads: 2, cpuProfile: true },
      },
      fetch: { soft: true, softTimeout: 15, headTimeout: 20, minRate: 1024, rateGrace: 10 },
    });
  });

  test('inline keys and URLs are not taken for relative paths', () => {
    const c = parseConfig(`key: ${KEY}\nmirrorlist: https://x/list\n`, '/etc/hfk/hfk.yaml');
    expect(c.key).toBe(KEY);
    expect(c.mirrorlist).toBe('https://x/list');
    expect(parseConfig(`key: hfk-ed25519 ${KEY} me@host\n`, '/etc/hfk/hfk.yaml').key).toBe(`hfk-ed25519 ${KEY} me@host`);
  });

  const bad: [string, string][] = [
    ['imag: debian\n', "hfk.yaml:1: unknown key 'imag' (allowed here: image, mirrors, mirrorlist, proxy, noProxy, netrc, key, cache, init, fetch)"],
    ['cache:\n  memory: 1M\n  maxsize: 2G\n', "hfk.yaml:3: unknown key 'cache.maxsize' (allowed here: memory, dir, maxSize)"],
    ['init:\n  modules: []\n  extra: 1\n', "hfk.yaml:3: unknown key 'init.extra' (allowed here: cache, overlay, timeout, modules, break, reader)"],
    ['init:\n  reader:\n    jit: baseline\n', "hfk.yaml:3: unknown key 'init.reader.jit' (allowed here: readahead, prefetch, verifyThreads, cpuProfile, metrics)"],
    ['init:\n  reader:\n    metrics: localhost\n', 'hfk.yaml:3: init.reader.metrics: must be HOST:PORT, e.g. 127.0.0.1:9101 or [::1]:9101'],
    ['init:\n  reader:\n    readahead: far\n', "hfk.yaml:3: init.reader.readahead: 'far' is not a size like 268435456, 256M or 2G"],
    ['init:\n  reader:\n    verifyThreads: 17\n', 'hfk.yaml:3: init.reader.verifyThreads: 17 is not a whole number of threads from 0 to 16'],
    ['init:\n  reader:\n    cpuProfile: 1\n', 'hfk.yaml:3: init.reader.cpuProfile: 1 is not true or false'],
    ['mirrors: http://a/\n', "hfk.yaml:1: mirrors: 'http://a/' is not a list"],
    ['mirrors:\n  - http://a/\n  - ftp://b/\n', "hfk.yaml:3: mirrors[1]: 'ftp://b/' is not an http:// or https:// URL"],
    ['image: "bad name"\n', "hfk.yaml:1: image: 'bad name' is not NAME or NAME@VERSION"],
    ['proxy: 3128\n', 'hfk.yaml:1: proxy: 3128 is not a proxy URL'],
    ['key: QUJDREVGR0hJSktMTU5PUFFSU1Q=\n', "hfk.yaml:1: key: 'QUJDREVGR0hJSktMTU5PUFFSU1Q=' is not an Ed25519 public key"],
    ['cache:\n  memory: lots\n', "hfk.yaml:2: cache.memory: 'lots' is not a size like 268435456, 256M or 2G"],
    ['cache:\n  memory: -1\n', 'hfk.yaml:2: cache.memory: -1 is not a size'],
    ['cache: 1G\n', "hfk.yaml:1: cache: '1G' is not a mapping"],
    ['init:\n  cache: /mnt/disk\n', "hfk.yaml:2: init.cache: '/mnt/disk' is not 'tmpfs', a /dev/… path, LABEL=… or UUID=…"],
    ['init:\n  timeout: 0\n', 'hfk.yaml:2: init.timeout: 0 is not a whole number of seconds from 1 to 86400'],
    ['init:\n  modules: [virtio net]\n', "hfk.yaml:2: init.modules[0]: 'virtio net' is not a kernel module name"],
    ['init:\n  break: boot\n', "hfk.yaml:2: init.break: 'boot' is not a stage: the stages are early, config"],
    ['fetch:\n  soft: yes\n', "hfk.yaml:2: fetch.soft: 'yes' is not true or false"],
    ['- a\n- b\n', 'hfk.yaml:1: (top level): a list is not a mapping'],
    ['image: a\nimage: b\n', 'hfk.yaml:2: not valid YAML: Map keys must be unique'],
    ['mirrors: [http://a/\n', 'hfk.yaml'],
  ];
  test.each(bad)('%j is refused', (text, message) => {
    const e = configError(text);
    expect(e.code).toBe('E_CONFIG');
    expect(e.file).toBe('hfk.yaml');
    expect(e.message).toContain(message);
    expect(e.hint).toContain('config/hfk.yaml');
  });

  test('every problem is reported, in line order', () => {
    const e = configError('bogus: 1\ninit:\n  timeout: x\nmirrors: [ftp://a/]\n', '/etc/hfk/hfk.yaml');
    expect(e.problems.map((p) => [p.line, p.key])).toEqual([
      [1, 'bogus'],
      [3, 'init.timeout'],
      [4, 'mirrors[0]'],
    ]);
    expect(e.message.split('\n')).toHaveLength(3);
  });
});

describe('config/hfk.yaml, the documented example', () => {
  const text = readFileSync(EXAMPLE, 'utf8');

  test('parses as it is (all defaults)', () => {
    expect(parseConfig(text, EXAMPLE)).toEqual(defaultConfig());
  });

  test('uncommented, every setting is valid and every documented default is the real one', () => {
    // "#key: value" and "#  key: value" lines are settings; "# prose" and "#  # prose" are not.
    const uncommented = text
      .split('\n')
      .map((l) => (/^#(?! )/.test(l) || /^# {2}(?!#)/.test(l) ? l.slice(1) : l))
      .join('\n');
    const c = parseConfig(uncommented, '/etc/hfk/hfk.yaml');
    const d = defaultConfig();
    expect(c.cache.memory).toBe(d.cache.memory);
    expect(c.cache.maxSize).toBe(d.cache.maxSize);
    // break and reader.prefetch have no single default: the example shows a value
    expect({ ...c.init, break: undefined, reader: { ...c.init.reader, prefetch: undefined } }).toEqual({ ...d.init, break: undefined });
    expect(c.fetch).toEqual(d.fetch);
    // every key of the schema appears in the example
    expect(Object.keys(c).sort()).toEqual(Object.keys(Config.shape).sort());
    expect(Object.keys(c.cache).sort()).toEqual(['dir', 'maxSize', 'memory']);
    expect(Object.keys(c.init).sort()).toEqual(['break', 'cache', 'modules', 'overlay', 'reader', 'timeout']);
    expect(Object.keys(c.init.reader).sort()).toEqual(['cpuProfile', 'prefetch', 'readahead', 'verifyThreads']);
  });
});

describe('loadConfig', () => {
  const dir = mkdtempSync(join(tmpdir(), 'hfk-config-'));
  afterAll(() => rmSync(dir, { recursive: true, force: true }));

  test('reads a file; relative paths are resolved from its folder', () => {
    const path = join(dir, 'hfk.yaml');
    writeFileSync(path, 'image: x\nkey: x.pub\n');
    expect(loadConfig(path)).toMatchObject({ image: { name: 'x' }, key: join(dir, 'x.pub') });
  });

  test('a missing file is an error, or the defaults when optional', () => {
    const path = join(dir, 'none.yaml');
    expect(() => loadConfig(path)).toThrow(expect.objectContaining({ code: 'E_CONFIG', message: `${path}: the config file does not exist` }));
    expect(loadConfig(path, { optional: true })).toEqual(defaultConfig());
  });
});

describe('mount sources', () => {
  test.each(['tmpfs', '/dev/vdb', '/dev/disk/by-id/virtio-cache', 'LABEL=hfk cache', 'UUID=3f1e2d4c-5b6a-4789-9abc-def012345678'])('%s round-trips', (text) => {
    expect(formatMountSource(MountSourceText.parse(text))).toBe(text);
  });
});

describe('parseMirrorList', () => {
  test('one URL per line, comments and blank lines ignored, duplicates dropped', () => {
    const text = ['# mirrors of the lab', '', 'http://10.0.2.2:8080/hfk', '  https://a.example.org/hfk/   # Europe', 'http://10.0.2.2:8080/hfk/', '\t', 'https://b.example.org/#x'].join('\r\n');
    expect(() => parseMirrorList(text, 'm.txt')).toThrow(/m\.txt:7: 'https:\/\/b\.example\.org\/#x' is a URL with a query/);
    expect(parseMirrorList(text.replace('/#x', '/'), 'm.txt')).toEqual(['http://10.0.2.2:8080/hfk/', 'https://a.example.org/hfk/', 'https://b.example.org/']);
  });

  const bad: [string, string][] = [
    ['http://a/\nftp://b/\n', "list:2: 'ftp://b/' is not an http:// or https:// URL"],
    ['http://a/ http://b/\n', "list:1: 'http://a/ http://b/' is more than one URL: give one mirror per line"],
    ['# nothing\n\n', 'list lists no mirrors'],
  ];
  test.each(bad)('%j is refused', (text, message) => {
    expect(() => parseMirrorList(text, 'list')).toThrow(expect.objectContaining({ code: 'E_MIRRORLIST', message, source: 'list' }));
    expect(() => parseMirrorList(text, 'list')).toThrow(MirrorListError);
  });
});
