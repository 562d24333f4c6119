import { defineConfig } from 'vitest/config';

// Unit tests sit beside the code (src/**/x.test.ts); integration, mount and
// QEMU tests live in test/. Real mounts, servers and VMs are shared
// machine resources, so test files run one at a time.
export default defineConfig({
  root: new URL('..', import.meta.url).pathname,
  test: {
    include: ['src/**/*.test.ts', 'test/**/*.test.ts'],
    exclude: ['node_modules/**', 'dist/**'],
    fileParallelism: false,
    testTimeout: 60_000,
    hookTimeout: 120_000,
    reporters: ['default'],
  },
});
