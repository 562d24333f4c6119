import { describe, expect, it } from 'vitest';
import { readerEnv } from './launch.ts';

describe('readerEnv', () => {
  it('asks glibc for huge pages behind the heap, keeping the rest of the environment', () => {
    const env = { PATH: '/bin', HOME: '/root' };
    expect(readerEnv(env)).toEqual({ PATH: '/bin', HOME: '/root', GLIBC_TUNABLES: 'glibc.malloc.hugetlb=1' });
    expect(env).toEqual({ PATH: '/bin', HOME: '/root' }); // not changed in place
  });

  it('adds to tunables already set, and leaves a hugetlb the user chose', () => {
    expect(readerEnv({ GLIBC_TUNABLES: 'glibc.malloc.arena_max=2' }).GLIBC_TUNABLES).toBe('glibc.malloc.arena_max=2:glibc.malloc.hugetlb=1');
    expect(readerEnv({ GLIBC_TUNABLES: 'glibc.malloc.hugetlb=0' }).GLIBC_TUNABLES).toBe('glibc.malloc.hugetlb=0');
    expect(readerEnv({ GLIBC_TUNABLES: 'glibc.malloc.arena_max=2:glibc.malloc.hugetlb=2' }).GLIBC_TUNABLES).toBe('glibc.malloc.arena_max=2:glibc.malloc.hugetlb=2');
  });
});
