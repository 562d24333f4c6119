// Prometheus metrics of one reader, on HOST:PORT/metrics (hfk mount
// --metrics, init.reader.metrics). The counters are the fetcher's own, the
// ones .hfk/stats.json shows: each scrape reads them afresh, so nothing is
// counted twice. Only the per-mirror latency histogram is fed as requests
// end (MirrorGroup's observer), since stats.json keeps no distribution.
// A registry of its own per reader, never prom-client's global one.

import * as http from 'node:http';
import type { AddressInfo } from 'node:net';
import { Counter, Gauge, Histogram, Registry } from 'prom-client';
import type { FetcherStats } from '../fetch/fetcher.ts';
import type { MirrorObserver } from '../source/group.ts';
import { splitListen } from './spec.ts';

export interface ReaderMetrics {
  readonly registry: Registry;
  /** Told of each request to a mirror (GroupOptions.observe). */
  readonly observe: MirrorObserver;
  /** Where the counters come from; set once the image is open. */
  stats: (() => FetcherStats) | undefined;
  /** The exposition text, the counters read now. */
  text(): Promise<string>;
  /** Serves /metrics on HOST:PORT; resolves with the address bound (port 0: one the system picks). */
  listen(addr: string): Promise<string>;
  close(): Promise<void>;
}

type Values = Record<string, string>;

export function readerMetrics(): ReaderMetrics {
  const registry = new Registry();
  const counter = (name: string, help: string, labelNames: string[] = []) => new Counter({ name, help, labelNames, registers: [registry] });
  const gauge = (name: string, help: string, labelNames: string[] = []) => new Gauge({ name, help, labelNames, registers: [registry] });
  const m = {
    blocksFetched: counter('hfk_blocks_fetched_total', 'Blocks fetched from mirrors and verified'),
    bytesFetched: counter('hfk_bytes_fetched_total', 'Block-object bytes received from mirrors (hedge losers included)'),
    reads: counter('hfk_reads_total', 'Reads of the image served'),
    bytesServed: counter('hfk_bytes_served_total', 'Bytes of the image served to readers'),
    hits: counter('hfk_cache_hits_total', 'Blocks found in a cache', ['cache']),
    misses: counter('hfk_cache_misses_total', 'Blocks looked for in a cache and not found', ['cache']),
    cacheBytes: gauge('hfk_cache_bytes', 'Bytes a cache holds', ['cache']),
    cacheLimit: gauge('hfk_cache_limit_bytes', 'Most bytes a cache may hold', ['cache']),
    failovers: counter('hfk_failovers_total', 'Requests passed to the next mirror after one failed'),
    hedges: counter('hfk_hedges_total', 'Requests also sent to a second mirror because the first was slow'),
    retryRounds: counter('hfk_retry_rounds_total', 'Rounds of retries after every mirror failed'),
    verifyFailures: counter('hfk_verification_failures_total', 'Blocks that failed verification (corrupt data from a mirror)'),
    requests: counter('hfk_mirror_requests_total', 'Requests to a mirror', ['mirror']),
    errors: counter('hfk_mirror_errors_total', 'Failed requests to a mirror, by reason', ['mirror', 'reason']),
    down: gauge('hfk_mirror_down', '1 while a mirror backs off after failures', ['mirror']),
    chosen: gauge('hfk_mirror_chosen', '1 for the mirror the last block came from', ['mirror']),
    inFlight: gauge('hfk_blocks_in_flight', 'Blocks being fetched now'),
    image: gauge('hfk_image_info', 'The image served', ['name', 'version']),
  };
  const latency = new Histogram({
    name: 'hfk_mirror_request_seconds',
    help: 'Time to fetch and verify one block from a mirror',
    labelNames: ['mirror'],
    buckets: [0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30],
    registers: [registry],
  });

  const set = (c: Counter | Gauge, v: number, labels?: Values) => {
    if (c instanceof Gauge) return labels ? c.set(labels, v) : c.set(v);
    if (labels) c.inc(labels, v);
    else c.inc(v);
  };
  /** Every metric from one stats snapshot (the counters restart from it). */
  const refresh = (s: FetcherStats) => {
    for (const x of Object.values(m)) x.reset();
    set(m.blocksFetched, s.blocksFetched);
    set(m.bytesFetched, s.bytesFetched);
    set(m.reads, s.reads);
    set(m.bytesServed, s.bytesRead);
    set(m.hits, s.memoryHits, { cache: 'memory' });
    set(m.misses, s.memoryMisses, { cache: 'memory' });
    set(m.cacheBytes, s.memory.bytes, { cache: 'memory' });
    set(m.cacheLimit, s.memory.limitBytes, { cache: 'memory' });
    if (s.disk) {
      set(m.hits, s.disk.hits, { cache: 'disk' });
      set(m.misses, s.disk.misses, { cache: 'disk' });
      set(m.cacheBytes, s.disk.bytes, { cache: 'disk' });
      set(m.cacheLimit, s.disk.limitBytes, { cache: 'disk' });
    }
    set(m.failovers, s.failovers);
    set(m.hedges, s.hedges);
    set(m.retryRounds, s.retryRounds);
    set(m.inFlight, s.inFlight);
    set(m.image, 1, { name: s.image.name, version: String(s.image.version) });
    let invalid = 0;
    for (const mi of s.mirrors) {
      const mirror = mi.url;
      invalid += mi.invalid;
      set(m.requests, mi.requests, { mirror });
      // MirrorHealth counts a corrupt block as a failure too: broken is the rest.
      set(m.errors, mi.failures - mi.invalid, { mirror, reason: 'broken' });
      set(m.errors, mi.invalid, { mirror, reason: 'invalid' });
      set(m.errors, mi.missing, { mirror, reason: 'missing' });
      set(m.down, mi.down ? 1 : 0, { mirror });
      set(m.chosen, s.mirror === mirror ? 1 : 0, { mirror });
    }
    set(m.verifyFailures, invalid);
  };

  let server: http.Server | undefined;
  const self: ReaderMetrics = {
    registry,
    stats: undefined,
    observe: (mirror, ms, outcome) => {
      if (outcome === 'ok') latency.observe({ mirror }, ms / 1000);
    },
    async text() {
      if (self.stats) refresh(self.stats());
      return registry.metrics();
    },
    listen(addr) {
      const { host, port } = splitListen(addr);
      const s = http.createServer((req, res) => {
        if (req.method !== 'GET' || new URL(req.url ?? '/', 'http://x').pathname !== '/metrics') {
          res.writeHead(404, { 'content-type': 'text/plain' }).end('see /metrics\n');
          return;
        }
        self.text().then(
          (body) => res.writeHead(200, { 'content-type': registry.contentType }).end(body),
          (e: unknown) => res.writeHead(500, { 'content-type': 'text/plain' }).end(`${e instanceof Error ? e.message : String(e)}\n`),
        );
      });
      return new Promise((resolve, reject) => {
        s.once('error', reject);
        s.listen(port, host, () => {
          s.off('error', reject);
          s.unref(); // never keeps the reader alive by itself
          server = s;
          const a = s.address() as AddressInfo;
          resolve(a.family === 'IPv6' ? `[${a.address}]:${a.port}` : `${a.address}:${a.port}`);
        });
      });
    },
    async close() {
      const s = server;
      server = undefined;
      if (!s) return;
      s.closeAllConnections();
      await new Promise<void>((resolve) => s.close(() => resolve()));
    },
  };
  return self;
}

/**
 * Serves a reader's metrics on `addr` until close(). The address may be held
 * a while by the reader this one takes over from (hfk mount --upgrade, a
 * restart): it is tried again every second for a minute; a failure is
 * logged, never fatal (the metrics serve the mount, not the other way round).
 */
export function serveMetrics(metrics: ReaderMetrics, addr: string, log: (line: string) => void, options: { retries?: number; delayMs?: number } = {}): { close(): Promise<void> } {
  const retries = options.retries ?? 60;
  let stopped = false;
  let timer: NodeJS.Timeout | undefined;
  const attempt = (n: number) => {
    metrics.listen(addr).then(
      (bound) => {
        if (stopped) void metrics.close();
        else log(`reader: metrics on http://${bound}/metrics`);
      },
      (e: NodeJS.ErrnoException) => {
        if (stopped) return;
        if (e.code === 'EADDRINUSE' && n < retries) {
          timer = setTimeout(() => attempt(n + 1), options.delayMs ?? 1000);
          timer.unref();
          return;
        }
        log(`reader: cannot serve metrics on ${addr}: ${e.message} (the mount goes on without them; choose another address with --metrics or init.reader.metrics)`);
      },
    );
  };
  attempt(0);
  return {
    close: async () => {
      stopped = true;
      clearTimeout(timer);
      await metrics.close();
    },
  };
}
