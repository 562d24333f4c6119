import { execFileSync } from 'node:child_process';
import { mkdtempSync, rmSync, statSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { afterAll, describe, expect, it } from 'vitest';
import { InputError, UsageError } from '../errors.ts';
import { findKernel } from '../../test/lab/qemu.ts';
import { archiveSize, type BuildReport, BuildOptions, buildInitramfs, collect, formatSizeReport, initBootstrap, initRecord, strippedNode } from './build.ts';
import { CpioTree, dir, encodeNewc, file, symlink } from './cpio.ts';

const work = mkdtempSync(join(tmpdir(), 'hfk-build-'));
afterAll(() => rmSync(work, { recursive: true, force: true }));
const kernel = findKernel();

describe('the /init record', () => {
  it('puts a bundle at /lib/hfk/hfk-init.mjs (its own #! line dropped) behind a bootstrap /init run by the packed Node', () => {
    const a = join(work, 'a.mjs');
    writeFileSync(a, '#!/usr/bin/env node\nconsole.log(1);\n');
    const text = (r: ReturnType<typeof initRecord>[number] | undefined) => (r?.type === 'file' && r.data.kind === 'bytes' ? r.data.bytes.toString() : undefined);
    const [init, bundle] = initRecord({ kind: 'node', path: a });
    expect(init).toMatchObject({ type: 'file', path: 'init', mode: 0o755, tag: 'init' });
    expect(text(init)).toBe(initBootstrap());
    expect(initBootstrap()).toMatch(/^#!\/usr\/bin\/node\n/);
    expect(initBootstrap()).toContain("enableCompileCache('/lib/hfk/compile-cache');");
    expect(initBootstrap()).toContain("await import('/lib/hfk/hfk-init.mjs');");
    expect(bundle).toMatchObject({ type: 'file', path: 'lib/hfk/hfk-init.mjs', mode: 0o644, tag: 'init' });
    expect(text(bundle)).toBe('console.log(1);\n');
    writeFileSync(a, 'import x from "y";\n');
    expect(text(initRecord({ kind: 'node', path: a })[1])).toBe('import x from "y";\n');
  });

  it('keeps a shell init as it is, and names what is wrong', () => {
    expect(() => initRecord({ kind: 'shell', content: 'echo hi\n' })).toThrow(/must start with a #! line such as #!\/bin\/sh: got 'echo hi/);
    expect(() => initRecord({ kind: 'node', path: join(work, 'missing.mjs') })).toThrow(InputError);
    expect(() => initRecord({ kind: 'node', path: join(work, 'missing.mjs') })).toThrow(/the init bundle .*missing.mjs does not exist/);
  });
});

describe('options', () => {
  it('refuse ambiguity and out-of-range values with the option named', async () => {
    const base = { out: join(work, 'x.img'), modulesDir: kernel.modulesDir, init: { kind: 'shell' as const, content: '#!/bin/sh\n' } };
    expect(BuildOptions.safeParse({ ...base, files: [{ path: 'etc/x', content: 'a', from: '/etc/hosts' }] }).error?.issues[0]?.message).toBe('an extra file needs exactly one of content and from');
    expect(BuildOptions.safeParse({ ...base, init: { kind: 'shell' } }).error?.issues[0]?.message).toBe('a shell init needs exactly one of path and content');
    await expect(buildInitramfs({ ...base, level: 20 })).rejects.toThrow(UsageError);
    await expect(buildInitramfs({ ...base, level: 20 })).rejects.toThrow('zstd level must be from 1 to 19: got 20');
    await expect(buildInitramfs({ ...base, compress: 'gzip', level: 0 })).rejects.toThrow('gzip level must be from 1 to 9: got 0');
    const oldNode = join(work, 'node20');
    writeFileSync(oldNode, '#!/bin/sh\necho v20.19.0\n', { mode: 0o755 });
    await expect(buildInitramfs({ ...base, node: oldNode })).rejects.toThrow(/is Node v20.19.0: hfk-init needs Node 24 or newer/);
    await expect(buildInitramfs({ ...base, out: join(work, 'no', 'dir', 'x.img') })).rejects.toThrow(/folder .*no\/dir does not exist/);
  });
});

describe('collect', () => {
  it('gathers every component, and extra files replace defaults', () => {
    const o = BuildOptions.parse({
      out: join(work, 'x.img'),
      modulesDir: kernel.modulesDir,
      modules: ['virtio_net'],
      init: { kind: 'shell', content: '#!/bin/sh\n' },
      config: 'image: x\n',
      files: [{ path: '/etc/hosts', content: '10.0.2.100 mirror\n' }],
    });
    const c = collect(o, mkdtempSync(join(work, 'stage-')));
    const tree = c.tree;
    expect(tree.get('etc/hosts')).toMatchObject({ type: 'file', data: { kind: 'bytes', bytes: Buffer.from('10.0.2.100 mirror\n') } });
    expect(tree.get('usr/bin/node')).toMatchObject({ tag: 'node', mode: 0o755 });
    expect(tree.get('lib64/ld-linux-x86-64.so.2')).toMatchObject({ tag: 'node' });
    expect(tree.get('bin/sh')).toMatchObject({ type: 'symlink', target: 'busybox' });
    expect(tree.get('dev/console')).toMatchObject({ type: 'chardev', major: 5, minor: 1 });
    expect(tree.get('etc/udhcpc/default.script')).toMatchObject({ type: 'file', mode: 0o755 });
    expect(tree.get('usr/share/udhcpc/default.script')).toMatchObject({ type: 'symlink', target: '../../../etc/udhcpc/default.script' });
    expect(tree.get('etc/ssl/certs/ca-certificates.crt')).toMatchObject({ type: 'file' });
    expect(tree.get('etc/hfk/hfk.yaml')).toMatchObject({ data: { kind: 'bytes', bytes: Buffer.from('image: x\n') } });
    expect(tree.get(`lib/modules/${kernel.version}/kernel/drivers/net/virtio_net.ko`)).toMatchObject({ tag: 'modules' });
    expect(tree.get('tmp')).toMatchObject({ type: 'dir', mode: 0o1777 });
    expect(c.modules).toBe(5); // virtio_net and its modules.dep: net_failover, failover, virtio, virtio_ring
  });
});

describe('sizes', () => {
  it('knows the archive size before writing it', async () => {
    const t = new CpioTree().add(dir('a'), file('a/b', 'xyz'), file('a/c', ''), symlink('l', 'a/b'));
    expect(archiveSize(t)).toBe((await encodeNewc(t)).length);
  });

  it('prints a report per component with both totals', () => {
    const r: BuildReport = {
      out: '/tmp/initrd.img',
      compression: { kind: 'zstd', level: 19 },
      mtime: 0,
      kernel: { version: '6.1.0-56-cloud-amd64', modules: 92, builtinSpecs: ['af_packet?'], skippedSpecs: [] },
      node: { binary: '/usr/bin/node', version: 'v24.21.0', stripped: true },
      components: { node: { files: 8, bytes: 132e6 }, busybox: { files: 1, bytes: 2e6 }, modules: { files: 105, bytes: 9.8e6 }, init: { files: 1, bytes: 2e6 }, other: { files: 6, bytes: 0.2e6 } },
      entries: 294,
      archiveBytes: 146.05e6,
      compressedBytes: 37.7e6,
      sha256: 'ab'.repeat(32),
      targetBytes: 48e6,
      withinTarget: true,
      busyboxMissingApplets: [],
      seconds: 85.2,
    };
    const text = formatSizeReport(r);
    expect(text).toContain('  node + libs  132.0 MB     8 files\n');
    expect(text).toContain('  uncompressed 146.1 MB\n');
    expect(text).toMatch(/ {2}zstd -19 {6}37\.7 MB {2}\(25\.8%, 36\.0 MiB\) in 85\.2 s\n {2}within the 48 MB target\n/);
    expect(formatSizeReport({ ...r, compression: { kind: 'gzip', level: 9 }, withinTarget: false })).toContain('WARNING: over the 48 MB target (zstd packs tighter)');
    expect(text).toContain('Node v24.21.0 (stripped)\n');
    expect(text).not.toContain('with its symbols');
    const unstripped = formatSizeReport({ ...r, node: { ...r.node, stripped: false, why: 'strip: not installed (apt-get install binutils)' } });
    expect(unstripped).toContain('  Node packed with its symbols: strip: not installed (apt-get install binutils)\n');
    expect(formatSizeReport({ ...r, node: { ...r.node, stripped: false } })).not.toContain('with its symbols'); // --no-strip
  });
});

describe('strippedNode', () => {
  it('writes a copy without symbols that still runs, and leaves the binary as it is without strip', () => {
    const work = mkdtempSync(join(tmpdir(), 'hfk-strip-'));
    try {
      // A binary with a symbol table: the packed Node (its symbols are what this removes).
      const s = strippedNode(process.execPath, work);
      expect(s.stripped).toBe(true);
      expect(s.path).toBe(join(work, 'node.stripped'));
      expect(statSync(s.path).size).toBeLessThan(statSync(process.execPath).size);
      expect(execFileSync(s.path, ['-p', '6 * 7']).toString().trim()).toBe('42');
      const none = strippedNode(process.execPath, work, 'no-such-strip-command');
      expect(none).toEqual({ path: process.execPath, stripped: false, why: 'no-such-strip-command: not installed (apt-get install binutils)' });
      const bad = strippedNode(join(work, 'missing'), work);
      expect(bad.stripped).toBe(false);
      expect(bad.path).toBe(join(work, 'missing'));
      expect(bad.why).toMatch(/^strip failed: .*missing/);
    } finally {
      rmSync(work, { recursive: true, force: true });
    }
  });
});
