import { afterEach, describe, expect, it } from 'vitest';
import { bootPrefetchBytes } from './boot.ts';

describe('the reader settings of a boot', () => {
  afterEach(() => {
    delete process.env.HFK_BOOT_PREFETCH_BYTES;
  });

  it('reads ahead only where what it fetches is kept for the next boot (a cache partition)', () => {
    expect(bootPrefetchBytes({ kind: 'tmpfs' })).toBe(0);
    expect(bootPrefetchBytes({ kind: 'label', label: 'hfk-cache' })).toBe(1 << 20);
    expect(bootPrefetchBytes({ kind: 'device', path: '/dev/vdb' })).toBe(1 << 20);
  });

  it('HFK_BOOT_PREFETCH_BYTES= overrides both; anything but a count is ignored', () => {
    process.env.HFK_BOOT_PREFETCH_BYTES = '65536';
    expect(bootPrefetchBytes({ kind: 'tmpfs' })).toBe(65536);
    process.env.HFK_BOOT_PREFETCH_BYTES = '1M';
    expect(bootPrefetchBytes({ kind: 'tmpfs' })).toBe(0);
  });
});
