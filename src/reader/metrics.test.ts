import { describe, expect, it, onTestFinished } from 'vitest';
import type { FetcherStats } from '../fetch/fetcher.ts';
import { readerMetrics, serveMetrics } from './metrics.ts';

function stats(over: Partial<FetcherStats> = {}): FetcherStats {
  const health = { latencyMs: 3, throughputMBps: 50, consecutiveFailures: 0, downForMs: 0 };
  return {
    image: { name: 'knoppix', version: 3, size: 1 << 20, blockSize: 65536, blocks: 16 },
    bytesFetched: 5000,
    blocksFetched: 7,
    diskHits: 2,
    hedges: 1,
    hedgesWon: 0,
    failovers: 3,
    retryRounds: 0,
    disk: { dir: '/c', limitBytes: 1 << 30, bytes: 4096, objects: 1, hits: 2, misses: 7, evicted: 0, discarded: 0 },
    mirrors: [
      { url: 'http://m1/', inFlight: 0, requests: 9, failures: 3, invalid: 1, missing: 0, down: true, ...health },
      { url: 'http://m2/', inFlight: 0, requests: 7, failures: 0, invalid: 0, missing: 2, down: false, ...health },
    ],
    mirror: 'http://m2/',
    memoryHits: 11,
    memoryMisses: 9,
    zeroBlocks: 0,
    sharedFetches: 0,
    prefetched: 0,
    inFlight: 0,
    bytesRead: 65536,
    reads: 4,
    memory: { bytes: 8192, limitBytes: 1 << 20, blocks: 2, backing: 'heap' },
    buffers: null,
    recentFetches: [],
    profilePrefetch: { total: 0, done: 0, fetched: 0, running: false },
    readaheadNetwork: true,
    readaheadDisk: true,
    ...over,
  };
}

describe('reader metrics', () => {
  it('reads the counters of stats.json at each scrape, per mirror and per cache', async () => {
    const m = readerMetrics();
    let s = stats();
    m.stats = () => s;
    m.observe('http://m2/', 12, 'ok');
    m.observe('http://m1/', 3, 'aborted'); // a cancelled request is no latency sample
    const text = await m.text();
    expect(text).toContain('hfk_blocks_fetched_total 7');
    expect(text).toContain('hfk_bytes_served_total 65536');
    expect(text).toContain('hfk_cache_hits_total{cache="memory"} 11');
    expect(text).toContain('hfk_cache_misses_total{cache="disk"} 7');
    expect(text).toContain('hfk_mirror_errors_total{mirror="http://m1/",reason="broken"} 2');
    expect(text).toContain('hfk_mirror_errors_total{mirror="http://m1/",reason="invalid"} 1');
    expect(text).toContain('hfk_mirror_errors_total{mirror="http://m2/",reason="missing"} 2');
    expect(text).toContain('hfk_verification_failures_total 1');
    expect(text).toContain('hfk_mirror_chosen{mirror="http://m2/"} 1');
    expect(text).toContain('hfk_mirror_chosen{mirror="http://m1/"} 0');
    expect(text).toContain('hfk_mirror_down{mirror="http://m1/"} 1');
    expect(text).toContain('hfk_mirror_request_seconds_count{mirror="http://m2/"} 1');
    expect(text).not.toContain('hfk_mirror_request_seconds_count{mirror="http://m1/"}');
    // The next scrape follows the counters; nothing is added twice.
    s = stats({ blocksFetched: 9 });
    const again = await m.text();
    expect(again).toContain('hfk_blocks_fetched_total 9');
    expect(again).toContain('hfk_cache_hits_total{cache="memory"} 11');
  });

  it('serves /metrics over HTTP on the address given and answers 404 elsewhere', async () => {
    const m = readerMetrics();
    m.stats = () => stats();
    const bound = await m.listen('127.0.0.1:0');
    onTestFinished(() => m.close());
    const r = await fetch(`http://${bound}/metrics`);
    expect(r.status).toBe(200);
    expect(r.headers.get('content-type')).toMatch(/^text\/plain/);
    expect(await r.text()).toContain('hfk_image_info{name="knoppix",version="3"} 1');
    expect((await fetch(`http://${bound}/`)).status).toBe(404);
  });

  it('waits for an address another reader still holds, then serves on it', async () => {
    const first = readerMetrics();
    const bound = await first.listen('127.0.0.1:0');
    const lines: string[] = [];
    const second = readerMetrics();
    second.stats = () => stats();
    const served = serveMetrics(second, bound, (l) => lines.push(l), { delayMs: 20 });
    onTestFinished(() => served.close());
    await first.close();
    await expect.poll(() => lines, { timeout: 10_000 }).toEqual([`reader: metrics on http://${bound}/metrics`]);
    expect((await fetch(`http://${bound}/metrics`)).status).toBe(200);
  });

  it('logs an address it cannot have and goes on', async () => {
    const lines: string[] = [];
    const served = serveMetrics(readerMetrics(), '192.0.2.1:9', (l) => lines.push(l), { retries: 0 });
    onTestFinished(() => served.close());
    await expect.poll(() => lines.length, { timeout: 10_000 }).toBe(1);
    expect(lines[0]).toMatch(/^reader: cannot serve metrics on 192\.0\.2\.1:9: .*the mount goes on without them/);
  });
});
