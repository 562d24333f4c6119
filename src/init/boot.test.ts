import { describe, expect, it } from 'vitest';
import { defaultConfig, parseConfig } from '../config/config.ts';
import { BOOT_PREFETCH_CACHED, blockCacheHoldMs, blockCacheLimit, bootPrefetchBytes, bootProfileGapBytes, bootReadAheadKb } from './boot.ts';

describe('the reader settings of a boot', () => {
  it('holds the tmpfs block cache writes until the boot has gone quiet; a cache partition is written at once', () => {
    expect(blockCacheHoldMs({ kind: 'tmpfs' })).toBe(5000);
    expect(blockCacheHoldMs({ kind: 'label', label: 'hfk-cache' })).toBe(0);
    expect(blockCacheHoldMs({ kind: 'uuid', uuid: 'x' })).toBe(0);
  });

  it('sets the kernel readahead of the image from init.reader.readahead, 512 KiB by default', () => {
    expect(bootReadAheadKb(defaultConfig().init.reader)).toBe(512);
    expect(bootReadAheadKb(parseConfig('init:\n  reader:\n    readahead: 2M\n', '/etc/hfk/hfk.yaml').init.reader)).toBe(2048);
  });

  it('reads ahead only where what it fetches is kept for the next boot (a cache partition)', () => {
    expect(bootPrefetchBytes({ kind: 'tmpfs' })).toBe(0);
    expect(bootPrefetchBytes({ kind: 'label', label: 'hfk-cache' })).toBe(1 << 20);
    expect(bootPrefetchBytes({ kind: 'device', path: '/dev/vdb' })).toBe(1 << 20);
  });

  it('fetches the gaps of the boot profile only into a cache partition, up to 1 MiB each', () => {
    expect(bootProfileGapBytes({ kind: 'tmpfs' })).toBe(0);
    expect(bootProfileGapBytes({ kind: 'label', label: 'hfk-cache' })).toBe(1 << 20);
    expect(bootProfileGapBytes({ kind: 'device', path: '/dev/vdb' })).toBe(1 << 20);
  });

  it('does not read ahead from the cache partition (only to fill it)', () => {
    expect(BOOT_PREFETCH_CACHED).toBe(false);
  });

  it('init.reader.prefetch replaces the readahead of either cache, 0 included', () => {
    const prefetch = parseConfig('init:\n  reader:\n    prefetch: 64K\n', '/etc/hfk/hfk.yaml').init.reader.prefetch;
    expect(bootPrefetchBytes({ kind: 'tmpfs' }, prefetch)).toBe(65536);
    expect(bootPrefetchBytes({ kind: 'label', label: 'hfk-cache' }, prefetch)).toBe(65536);
    expect(bootPrefetchBytes({ kind: 'label', label: 'hfk-cache' }, 0)).toBe(0);
    expect(bootPrefetchBytes({ kind: 'tmpfs' }, defaultConfig().init.reader.prefetch)).toBe(0);
  });

  it('keeps the tmpfs block cache to a quarter of its tmpfs (/run, which the booted system needs)', () => {
    const GiB = 1024 ** 3;
    expect(blockCacheLimit({ kind: 'tmpfs' }, 4 * GiB, 1 * GiB)).toBe(GiB / 4);
    expect(blockCacheLimit({ kind: 'tmpfs' }, 100 << 20, 1 * GiB)).toBe(100 << 20); // a smaller setting stands
    expect(blockCacheLimit({ kind: 'tmpfs' }, 4 * GiB, undefined)).toBe(4 * GiB); // size unknown
  });

  it('keeps a cache partition to 90% of its filesystem, and to half when the overlay shares it', () => {
    const GiB = 1024 ** 3;
    const label = { kind: 'label', label: 'hfk-cache' } as const;
    expect(blockCacheLimit(label, 4 * GiB, 1 * GiB)).toBe(Math.floor(0.9 * GiB));
    expect(blockCacheLimit(label, 4 * GiB, 100 * GiB)).toBe(4 * GiB); // a larger partition: as configured
    expect(blockCacheLimit(label, 4 * GiB, 1 * GiB, { kind: 'tmpfs' })).toBe(Math.floor(0.9 * GiB)); // the overlay elsewhere
    expect(blockCacheLimit(label, 4 * GiB, 1 * GiB, { kind: 'label', label: 'hfk-cache' })).toBe(GiB / 2);
    expect(blockCacheLimit({ kind: 'device', path: '/dev/vdb' }, 4 * GiB, 1 * GiB, { kind: 'device', path: '/dev/vdb' })).toBe(GiB / 2);
    expect(blockCacheLimit(label, 4 * GiB, undefined, label)).toBe(4 * GiB); // size unknown
  });
});
