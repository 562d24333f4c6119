import { describe, expect, it } from 'vitest';
import { UsageError } from '../errors.ts';
import { DEFAULT_KEY, mountHelperArgs } from './mounthelper.ts';

describe('mountHelperArgs: mount(8) helper arguments to hfk mount', () => {
  it.each([
    [['debian@http://m/hfk/', '/mnt/h'], ['mount', '/mnt/h', '--name', 'debian', '--mirrors', 'http://m/hfk/', '--key', DEFAULT_KEY]],
    [['debian@3@https://a/,https://b/', '/mnt/h'], ['mount', '/mnt/h', '--name', 'debian@3', '--mirrors', 'https://a/,https://b/', '--key', DEFAULT_KEY]],
    // No URL: the mirrors come from the config.
    [['debian', '/mnt/h', '-o', 'config=/etc/hfk/hfk.yaml'], ['mount', '/mnt/h', '--name', 'debian', '--config', '/etc/hfk/hfk.yaml', '--key', DEFAULT_KEY]],
    // Generic options go; hfk's become its flags; the key given replaces the default.
    [
      ['debian@http://m/', '/mnt/h', '-n', '-o', 'rw,noauto,_netdev,x-systemd.automount,key=/k.pub,soft,cache-size=1G'],
      ['mount', '/mnt/h', '--name', 'debian', '--mirrors', 'http://m/', '--key', '/k.pub', '--soft', '--cache-size', '1G'],
    ],
    [['-oro,cache=/c', 'd@http://m/', '/x'], ['mount', '/x', '--name', 'd', '--mirrors', 'http://m/', '--cache', '/c', '--key', DEFAULT_KEY]],
    // Metrics and the proxy; a quoted value keeps its commas (as libmount splits), and proxy= turns proxies off.
    [
      ['d@http://m/', '/x', '-o', 'metrics=127.0.0.1:9101,proxy=http://squid:3128,no-proxy="localhost,10.0.0.0/8",nofail'],
      ['mount', '/x', '--name', 'd', '--mirrors', 'http://m/', '--metrics', '127.0.0.1:9101', '--proxy', 'http://squid:3128', '--no-proxy', 'localhost,10.0.0.0/8', '--key', DEFAULT_KEY],
    ],
    [['d@http://m/', '/x', '-o', 'proxy=,metrics=[::1]:9101'], ['mount', '/x', '--name', 'd', '--mirrors', 'http://m/', '--proxy', '', '--metrics', '[::1]:9101', '--key', DEFAULT_KEY]],
  ])('%j → hfk %j', (argv, want) => {
    expect(mountHelperArgs(argv)).toEqual({ fake: false, hfkArgs: want });
  });

  it('reports -f (fake) so that nothing is mounted', () => {
    expect(mountHelperArgs(['d@http://m/', '/x', '-fv']).fake).toBe(true);
  });

  it.each([
    [['d@http://m/', '/x', '-o', 'colour=blue'], "mount.hfk: unknown option 'colour'"],
    [['d@http://m/', '/x', '-o', 'key'], "mount.hfk: option 'key' needs a value: key=…"],
    [['d@http://m/', '/x', '-o', 'metrics='], "mount.hfk: option 'metrics' needs a value: metrics=…"],
    [['d@http://m/', '/x', '-o', 'no-proxy="localhost,soft'], `mount.hfk: unbalanced '"' in options 'no-proxy="localhost,soft'`],
    [['d@http://m/', '/x', '-o', 'soft=1'], "mount.hfk: option 'soft' takes no value: got 'soft=1'"],
    [['d@http://m/'], 'mount.hfk takes SPEC and DIR: got 1 argument'],
    [['@http://m/', '/x'], "mount.hfk: '@http://m/' names no image"],
    [['d', '/x', '--bind'], "mount.hfk: unknown flag '--bind'"],
  ])('%j is refused: %s', (argv, message) => {
    expect(() => mountHelperArgs(argv)).toThrow(UsageError);
    expect(() => mountHelperArgs(argv)).toThrow(message);
  });
});
