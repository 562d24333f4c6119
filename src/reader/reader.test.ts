import { describe, expect, it } from 'vitest';
import { BASELINE_JIT_FLAGS, EMULATED_GLIBC_HWCAPS, EMULATED_OPENSSL_CAPS, emulatedCpu, jitForMirrors, readerEnv, readerNodeFlags } from './launch.ts';

const HARDWARE = 'processor\t: 0\nvendor_id\t: AuthenticAMD\nmodel name\t: AMD EPYC 7B13\nflags\t\t: fpu sse2 avx avx2 sha_ni\n';
const TCG = 'processor\t: 0\nvendor_id\t: AuthenticAMD\nmodel name\t: QEMU TCG CPU version 2.5+\nflags\t\t: fpu sse2 avx avx2\n';
const hardware = () => HARDWARE;
const tcg = () => TCG;

describe('readerEnv', () => {
  it('asks glibc for huge pages behind the heap, keeping the rest of the environment', () => {
    const env = { PATH: '/bin', HOME: '/root' };
    expect(readerEnv(env, hardware)).toEqual({ PATH: '/bin', HOME: '/root', GLIBC_TUNABLES: 'glibc.malloc.hugetlb=1' });
    expect(env).toEqual({ PATH: '/bin', HOME: '/root' }); // not changed in place
  });

  it('adds to tunables already set, and leaves a hugetlb the user chose', () => {
    expect(readerEnv({ GLIBC_TUNABLES: 'glibc.malloc.arena_max=2' }, hardware).GLIBC_TUNABLES).toBe('glibc.malloc.arena_max=2:glibc.malloc.hugetlb=1');
    expect(readerEnv({ GLIBC_TUNABLES: 'glibc.malloc.hugetlb=0' }, hardware).GLIBC_TUNABLES).toBe('glibc.malloc.hugetlb=0');
    expect(readerEnv({ GLIBC_TUNABLES: 'glibc.malloc.arena_max=2:glibc.malloc.hugetlb=2' }, hardware).GLIBC_TUNABLES).toBe('glibc.malloc.arena_max=2:glibc.malloc.hugetlb=2');
  });

  it('on an emulated CPU turns off the vector code of glibc and OpenSSL, unless the user set it', () => {
    expect(readerEnv({ PATH: '/bin' }, tcg)).toEqual({ PATH: '/bin', GLIBC_TUNABLES: `glibc.malloc.hugetlb=1:${EMULATED_GLIBC_HWCAPS}`, OPENSSL_ia32cap: EMULATED_OPENSSL_CAPS });
    expect(readerEnv({ OPENSSL_ia32cap: '~0x0' }, tcg).OPENSSL_ia32cap).toBe('~0x0');
    expect(readerEnv({ GLIBC_TUNABLES: 'glibc.cpu.hwcaps=-AVX2' }, tcg).GLIBC_TUNABLES).toBe('glibc.cpu.hwcaps=-AVX2:glibc.malloc.hugetlb=1');
    expect(readerEnv({}, hardware).OPENSSL_ia32cap).toBeUndefined();
  });

  it('reads the CPU from /proc/cpuinfo, not from the environment', () => {
    expect(readerEnv({ HFK_EMULATED_CPU: '1' }, hardware).OPENSSL_ia32cap).toBeUndefined();
    expect(readerEnv({ HFK_EMULATED_CPU: '0' }, tcg).OPENSSL_ia32cap).toBe(EMULATED_OPENSSL_CAPS);
  });
});

describe('readerNodeFlags', () => {
  it("holds V8's young generation to 8 MiB per semi-space unless NODE_OPTIONS sets it", () => {
    expect(readerNodeFlags({})).toEqual(['--max-semi-space-size=8']);
    expect(readerNodeFlags({ NODE_OPTIONS: '--max-old-space-size=200 --enable-source-maps' })).toEqual(['--max-semi-space-size=8']);
    expect(readerNodeFlags({ NODE_OPTIONS: '--max-semi-space-size=16' })).toEqual([]);
    expect(readerNodeFlags({ NODE_OPTIONS: '--trace-gc --max-semi-space-size 32' })).toEqual([]);
    expect(readerNodeFlags({ NODE_OPTIONS: '--max-semi-space-sizes=1' })).toEqual(['--max-semi-space-size=8']);
  });

  it("runs the 'baseline' JIT with Sparkplug only, and V8's own tiers by default", () => {
    expect(readerNodeFlags({}, 'baseline')).toEqual([...BASELINE_JIT_FLAGS, '--max-semi-space-size=8']);
    expect(BASELINE_JIT_FLAGS).toEqual(expect.arrayContaining(['--no-maglev', '--no-turbofan']));
    expect(readerNodeFlags({}, 'full')).toEqual(['--max-semi-space-size=8']);
    expect(readerNodeFlags({})).toEqual(['--max-semi-space-size=8']);
    expect(readerNodeFlags({ NODE_OPTIONS: '--max-semi-space-size=4' }, 'baseline')).toEqual([...BASELINE_JIT_FLAGS]);
    expect(readerNodeFlags({ HFK_READER_JIT: 'baseline' }, 'full')).toEqual(['--max-semi-space-size=8']); // no longer an override
  });

  it("gives readers of plain-HTTP mirrors the 'baseline' JIT, and readers that use undici (HTTPS, a proxy) the full one", () => {
    expect(jitForMirrors(['http://a/', 'HTTP://b/'])).toBe('baseline');
    expect(jitForMirrors(['http://a/', 'https://b/'])).toBe('full');
    expect(jitForMirrors(['http://a/'], 'http://proxy:3128/')).toBe('full');
  });
});

describe('emulatedCpu', () => {
  it("knows QEMU's TCG CPU by its model name, and nothing else", () => {
    expect(emulatedCpu(TCG)).toBe(true);
    expect(emulatedCpu(HARDWARE)).toBe(false);
    expect(emulatedCpu('model name\t: QEMU Virtual CPU version 2.5+\n')).toBe(false); // qemu64, also under KVM
    expect(emulatedCpu('')).toBe(false);
  });
});
