// Observing a mount: hfk mount --metrics serves Prometheus metrics that
// follow what the reader does, and a mirror serving corrupt blocks is said
// in the mount's log, with the reason.

import { execFile } from 'node:child_process';
import { mkdirSync, readFileSync, statSync, writeFileSync } from 'node:fs';
import { join } from 'node:path';
import { beforeAll, describe, expect, it, onTestFinished } from 'vitest';
import { hfk, hfkJson } from '../helpers/cli.ts';
import { makeTree, mksquashfs, pseudoRandom } from '../helpers/images.ts';
import { freePort, startFaultyMirror, startNginx } from '../helpers/mirrors.ts';
import { tempDir, tempDirKeep } from '../helpers/tmp.ts';

let work: string;
let store: string;
let pub: string;

const run = (cmd: string, args: string[]) =>
  new Promise<string>((resolve, reject) => execFile(cmd, args, (e, out, err) => (e ? reject(new Error(`${cmd} ${args.join(' ')}: ${err || e.message}`)) : resolve(out))));

/** Reads `count` 64 KiB blocks of the image from block `skip`, in another process (never from this event loop). */
const readImage = (img: string, skip: number, count: number) => run('dd', [`if=${img}`, 'of=/dev/null', 'bs=64k', `skip=${skip}`, `count=${count}`, 'status=none']);

/** One sample's value from the exposition text (undefined: no such series). */
function sample(text: string, series: string): number | undefined {
  const line = text.split('\n').find((l) => l.startsWith(`${series} `));
  return line === undefined ? undefined : Number(line.slice(series.length + 1));
}

async function mount(mirrors: string[], extra: string[]): Promise<{ fuse: string; log: string }> {
  const dir = tempDir('hfk-observe-');
  const fuse = join(dir, 'fuse');
  mkdirSync(fuse);
  const log = join(dir, 'reader.log');
  const r = await hfk(['mount', fuse, '--name', 'sq', '--mirrors', mirrors.join(','), '--key', pub, '--log', log, '--prefetch', '0', '--readahead', '0', '--json', ...extra]);
  expect(r.code, `${r.stderr}\n${r.stdout}`).toBe(0);
  onTestFinished(async () => {
    await hfk(['umount', fuse]);
  });
  return { fuse, log };
}

beforeAll(async () => {
  work = tempDirKeep('hfk-observe-');
  await hfk(['keygen', '--out', join(work, 'k')]);
  pub = join(work, 'k.pub');
  const tree = join(work, 'tree');
  makeTree(tree, 5);
  writeFileSync(join(tree, 'big.bin'), pseudoRandom(4 << 20, 7));
  store = join(work, 'store');
  await hfkJson(['publish', mksquashfs(tree, join(work, 'r.sqfs'), ['-noI', '-noD']), '--store', store, '--name', 'sq', '--key', join(work, 'k.key')]);
});

describe('hfk mount --metrics', () => {
  it('serves Prometheus metrics on the address given, and they follow the reads', async () => {
    const dir = tempDir('hfk-observe-nginx-');
    const nginx = await startNginx(store, dir);
    onTestFinished(() => nginx.stop());
    const port = await freePort();
    const { fuse } = await mount([nginx.url], ['--metrics', `127.0.0.1:${port}`]);
    const scrape = async () => {
      const r = await fetch(`http://127.0.0.1:${port}/metrics`);
      expect(r.status).toBe(200);
      return r.text();
    };
    // The reader binds the address once the image is mounted: wait for it.
    await expect.poll(() => scrape().then(() => true, () => false), { timeout: 20_000 }).toBe(true);
    const before = await scrape();
    expect(sample(before, 'hfk_image_info{name="sq",version="1"}')).toBe(1);
    const fetched0 = sample(before, 'hfk_blocks_fetched_total')!;
    const served0 = sample(before, 'hfk_bytes_served_total')!;

    await readImage(join(fuse, 'sq.img'), 0, 32);
    const after = await scrape();
    expect(sample(after, 'hfk_blocks_fetched_total')!).toBeGreaterThan(fetched0);
    expect(sample(after, 'hfk_bytes_served_total')!).toBeGreaterThanOrEqual(served0 + 32 * 65536);
    expect(sample(after, `hfk_mirror_request_seconds_count{mirror="${nginx.url}"}`)!).toBeGreaterThan(0);
    expect(sample(after, `hfk_mirror_chosen{mirror="${nginx.url}"}`)).toBe(1);
    expect(sample(after, 'hfk_reads_total')!).toBeGreaterThan(sample(before, 'hfk_reads_total')!);
    expect(sample(after, 'hfk_bytes_fetched_total')!).toBeGreaterThan(sample(before, 'hfk_bytes_fetched_total')!);
  });

  it('refuses an address that is not HOST:PORT before mounting anything', async () => {
    const r = await hfk(['mount', tempDir('hfk-observe-'), '--name', 'sq', '--mirrors', 'http://127.0.0.1:9/', '--key', pub, '--metrics', 'localhost']);
    expect(r.code).toBe(2);
    expect(r.stderr).toContain("--metrics must be HOST:PORT, e.g. 127.0.0.1:9101 or [::1]:9101: got 'localhost'");
  });
});

describe('mirror trouble in the log', () => {
  it('says a mirror that serves corrupt blocks in the mount log, with the reason, and counts it in the metrics', async () => {
    const bad = await startFaultyMirror(store);
    onTestFinished(() => bad.stop());
    const port = await freePort();
    const { fuse, log } = await mount([bad.url], ['--metrics', `127.0.0.1:${port}`, '--soft', '--soft-timeout', '2']);
    bad.fault = { kind: 'corrupt' };
    const img = join(fuse, 'sq.img');
    const blocks = Math.floor(statSync(img).size / 65536);
    // Soft mode: the read fails once the mirror has sent bad bytes for 2 s.
    await expect(readImage(img, blocks - 4, 4)).rejects.toThrow(/Input\/output error/);
    const text = readFileSync(log, 'utf8');
    const lines = text.split('\n').filter((l) => l.includes(`mirror ${bad.url} served a corrupt block`));
    expect(lines, text).toHaveLength(1); // once a minute, however many times it happened
    expect(lines[0]).toMatch(/served a corrupt block: .*(hash|corrupt).* \(no other mirror left\)$/);
    const metrics = await (await fetch(`http://127.0.0.1:${port}/metrics`)).text();
    expect(sample(metrics, 'hfk_verification_failures_total')!).toBeGreaterThan(1);
    expect(sample(metrics, `hfk_mirror_errors_total{mirror="${bad.url}",reason="invalid"}`)!).toBeGreaterThan(1);
  });
});
