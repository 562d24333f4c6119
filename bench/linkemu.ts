// A userspace link emulator (the machine has no netem): TCP proxies that
// give each mirror its own round-trip time and bandwidth.
//
//   node bench/linkemu.ts --map 127.0.0.2:8080=127.0.0.1:9000,rtt=50,rate=20mbit [--map …]
//
// Each --map listens on LISTEN and forwards to UPSTREAM. Every chunk is held
// for half the round trip in each direction, and each direction of a link is
// a shared pipe of the given rate (all connections of that mirror share it),
// so a 64 KiB block over a 20 Mbit/s, 50 ms link takes ~26 ms + 50 ms.
// `first=MS` adds a delay before the first response byte of every
// connection (a server slow to start serving). Prints "ready" when every
// listener is up; with --report-ms N, then prints a line every N ms with the
// bytes delivered so far towards the clients ("T_MS BYTES"), the data for a
// timeline of a boot. Exits on SIGTERM.
//
// The TCP handshake itself cannot be delayed from userspace: connecting is
// instant on every emulated mirror, which is exactly why connect time alone
// cannot rank mirrors.

import * as net from 'node:net';
import { parseArgs } from 'node:util';

export interface LinkSpec {
  listenHost: string;
  listenPort: number;
  upstreamHost: string;
  upstreamPort: number;
  rttMs: number;
  /** Bytes per millisecond; Infinity for unlimited. */
  rate: number;
  firstByteMs: number;
}

export function parseRate(text: string): number {
  const m = /^(\d+(?:\.\d+)?)(k|m|g)?(bit|bps|b)?$/i.exec(text.trim());
  if (!m) throw new Error(`rate must look like 20mbit, 500kbit or 10mbps: got '${text}'`);
  const mult = { k: 1e3, m: 1e6, g: 1e9 }[(m[2] ?? '').toLowerCase() as 'k' | 'm' | 'g'] ?? 1;
  const bits = (m[3] ?? 'bit').toLowerCase() === 'bit';
  const bytesPerSecond = (Number(m[1]) * mult) / (bits ? 8 : 1);
  return bytesPerSecond / 1000;
}

export function parseMap(text: string): LinkSpec {
  const [pair, ...opts] = text.split(',');
  const [listen, upstream] = (pair ?? '').split('=');
  const hp = (s: string | undefined, what: string) => {
    const m = /^(.+):(\d+)$/.exec(s ?? '');
    if (!m) throw new Error(`${what} must be HOST:PORT in '${text}'`);
    return [m[1]!, Number(m[2])] as const;
  };
  const [lh, lp] = hp(listen, 'listen address');
  const [uh, up] = hp(upstream, 'upstream address');
  const spec: LinkSpec = { listenHost: lh, listenPort: lp, upstreamHost: uh, upstreamPort: up, rttMs: 0, rate: Infinity, firstByteMs: 0 };
  for (const o of opts) {
    const [k, v] = o.split('=');
    if (k === 'rtt') spec.rttMs = Number(v);
    else if (k === 'rate') spec.rate = parseRate(v ?? '');
    else if (k === 'first') spec.firstByteMs = Number(v);
    else throw new Error(`unknown link option '${k}' in '${text}' (rtt=MS, rate=20mbit, first=MS)`);
  }
  return spec;
}

/** One direction of a link: a pipe of fixed rate and delay shared by all its connections. */
class Pipe {
  private nextFree = 0;
  private readonly rate: number;
  private readonly delay: number;
  constructor(rate: number, delay: number) {
    this.rate = rate;
    this.delay = delay;
  }
  /** When a chunk of `bytes` arriving now comes out at the far end. */
  schedule(bytes: number, now: number, notBefore = 0): number {
    const start = Math.max(now, this.nextFree);
    const done = Number.isFinite(this.rate) ? start + bytes / this.rate : start;
    this.nextFree = done;
    return Math.max(done + this.delay, notBefore);
  }
}

/** Bytes delivered to clients (after the pipe), over all links. */
export const delivered = { bytes: 0 };

function relay(from: net.Socket, to: net.Socket, pipe: Pipe, firstByteDelay: () => number, count = false): void {
  let queued = 0;
  let lastRelease = 0;
  from.on('data', (chunk: Buffer) => {
    const now = performance.now();
    // Keep order: never release a chunk before the one before it.
    const at = Math.max(pipe.schedule(chunk.length, now, firstByteDelay()), lastRelease);
    lastRelease = at;
    queued += chunk.length;
    if (queued > 512 * 1024) from.pause();
    setTimeout(() => {
      queued -= chunk.length;
      if (count) delivered.bytes += chunk.length;
      if (!to.destroyed) to.write(chunk);
      if (queued <= 256 * 1024) from.resume();
    }, Math.max(0, at - now));
  });
  // A normal end is passed on after the last chunk (end() flushes what is
  // buffered); only an error tears the other side down at once.
  from.on('end', () => {
    const at = Math.max(lastRelease, performance.now());
    setTimeout(() => to.end(), Math.max(0, at - performance.now()) + 1);
  });
  from.on('error', () => to.destroy());
}

export function startLink(spec: LinkSpec): Promise<net.Server> {
  const up = new Pipe(spec.rate, spec.rttMs / 2);
  const down = new Pipe(spec.rate, spec.rttMs / 2);
  const server = net.createServer((client) => {
    client.setNoDelay(true);
    const upstream = net.connect(spec.upstreamPort, spec.upstreamHost);
    upstream.setNoDelay(true);
    const opened = performance.now();
    let firstSent = false;
    relay(client, upstream, up, () => 0);
    relay(
      upstream,
      client,
      down,
      () => {
        if (firstSent || spec.firstByteMs === 0) return 0;
        firstSent = true;
        return opened + spec.firstByteMs;
      },
      true,
    );
  });
  return new Promise((resolve, reject) => {
    server.once('error', reject);
    server.listen(spec.listenPort, spec.listenHost, () => resolve(server));
  });
}

if (import.meta.url === `file://${process.argv[1]}`) {
  const { values } = parseArgs({ options: { map: { type: 'string', multiple: true }, 'report-ms': { type: 'string' } } });
  const specs = (values.map ?? []).map(parseMap);
  if (!specs.length) {
    process.stderr.write('usage: node bench/linkemu.ts --map LISTEN_HOST:PORT=UPSTREAM_HOST:PORT,rtt=MS,rate=20mbit[,first=MS] …\n');
    process.exit(2);
  }
  const servers = await Promise.all(specs.map(startLink));
  process.stdout.write('ready\n');
  const every = Number(values['report-ms'] ?? 0);
  if (every > 0) {
    const t0 = performance.now();
    setInterval(() => process.stdout.write(`${Math.round(performance.now() - t0)} ${delivered.bytes}\n`), every);
  }
  const stop = () => {
    for (const s of servers) s.close();
    process.exit(0);
  };
  process.on('SIGTERM', stop);
  process.on('SIGINT', stop);
}
