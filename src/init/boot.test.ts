import { afterEach, describe, expect, it } from 'vitest';
import { blockCacheHoldMs, blockCacheLimit, bootPrefetchBytes, bootPrefetchCached, bootProfileGapBytes } from './boot.ts';

describe('the reader settings of a boot', () => {
  afterEach(() => {
    delete process.env.HFK_BOOT_PREFETCH_BYTES;
    delete process.env.HFK_BOOT_CACHE_HOLD_MS;
    delete process.env.HFK_BOOT_PREFETCH_CACHED;
  });

  it('holds the tmpfs block cache writes until the boot has gone quiet; a cache partition is written at once', () => {
    expect(blockCacheHoldMs({ kind: 'tmpfs' })).toBe(5000);
    expect(blockCacheHoldMs({ kind: 'label', label: 'hfk-cache' })).toBe(0);
    process.env.HFK_BOOT_CACHE_HOLD_MS = '0';
    expect(blockCacheHoldMs({ kind: 'tmpfs' })).toBe(0);
    expect(blockCacheHoldMs({ kind: 'uuid', uuid: 'x' })).toBe(0);
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

  it('does not read ahead from the cache partition (only to fill it), unless HFK_BOOT_PREFETCH_CACHED=1', () => {
    expect(bootPrefetchCached()).toBe(false);
    process.env.HFK_BOOT_PREFETCH_CACHED = '1';
    expect(bootPrefetchCached()).toBe(true);
    process.env.HFK_BOOT_PREFETCH_CACHED = 'yes';
    expect(bootPrefetchCached()).toBe(false);
  });

  it('HFK_BOOT_PREFETCH_BYTES= overrides both; anything but a count is ignored', () => {
    process.env.HFK_BOOT_PREFETCH_BYTES = '65536';
    expect(bootPrefetchBytes({ kind: 'tmpfs' })).toBe(65536);
    process.env.HFK_BOOT_PREFETCH_BYTES = '1M';
    expect(bootPrefetchBytes({ kind: 'tmpfs' })).toBe(0);
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
