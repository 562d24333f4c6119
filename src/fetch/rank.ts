// netselect for HTTP: measure every mirror at once and rank them.
//
// For each mirror: a few rounds of TCP connect time and time to first byte
// of the image's pointer (a small, real, uncacheable object); then its
// manifest; then a couple of real block objects of typical size. The score
// is the expected time to fetch one block (the fastest of a few block fetches,
// inflated by loss). A fast TCP handshake (or ICMP echo) alone proves
// nothing: a host can accept connections at once and still serve slowly, so
// neither is scored.
//
// The pointer is unsigned: the version it claims orders the ranking only once
// that mirror's manifest of that version has verified with the pinned key. A
// mirror whose claim fails is reported and ranked after those that serve a
// verified version; nothing unsigned is decoded.

import * as net from 'node:net';
import { HfkError, InvalidError } from '../errors.ts';
import type { PublicKey } from '../format/keys.ts';
import { blockPath, manifestPath, pointerPath } from '../format/layout.ts';
import {
  decodeManifest,
  decodePointer,
  MANIFEST_MAX_BYTES,
  type Manifest,
  manifestDigest,
  manifestReadLimit,
  type Pointer,
  POINTER_MAX_BYTES,
} from '../format/manifest.ts';
import type { RequestTiming } from '../store/store.ts';
import type { Mirror } from '../source/mirror.ts';
import { median } from '../source/score.ts';
import { isUrl } from '../store/store.ts';

export interface RankOptions {
  /** Image whose pointer and manifest are probed. */
  name: string;
  /**
   * The pinned key. A pointer's version counts only once its manifest
   * verifies with it; without a key no version counts (mirrors are ranked by
   * speed alone) and no manifest is decoded, so no block is probed.
   */
  key?: PublicKey | undefined;
  /** Ends the probing early (the caller's overall deadline); the ranking so far is returned. */
  signal?: AbortSignal | undefined;
  /** Pointer rounds per mirror (default 3). */
  rounds?: number;
  /** Give up on mirrors still probing after this long (default 1500 ms). */
  deadlineMs?: number;
  /** Also measure ICMP echo with the system ping (informational). */
  icmp?: boolean;
  /** Through a proxy the TCP connect time to a mirror means nothing: skip it. */
  viaProxy?: boolean;
  /** Average stored object size to score with before the manifest is known. */
  objectBytes?: number;
  /**
   * Also fetch a couple of real block objects per mirror (default true).
   * Off when a warm disk cache means few blocks will be fetched at all.
   */
  blocks?: boolean;
  /**
   * Filled with the manifests the probes fetched and verified (store path →
   * bytes), so that loading the image need not fetch the same bytes again
   * (loadImage's `known`).
   */
  manifests?: Map<string, Buffer>;
}

export interface MirrorRank {
  url: string;
  connectMs: number | null;
  ttfbMs: number | null;
  /** Median time to fetch a real block object, request to last byte. */
  blockMs: number | null;
  throughputMBps: number | null;
  icmpMs: number | null;
  rounds: number;
  ok: number;
  loss: number;
  /** Expected milliseconds per block; Infinity when the mirror is unusable. */
  score: number;
  /** Latest version the mirror offers: its pointer's, once the manifest of that version verified with the key. */
  version: number | null;
  /** The version the mirror's pointer claims (unsigned: not used for ordering). */
  claimed: number | null;
  /** Why the pointer's claim was not counted (its manifest was missing, too big, forged…), or null. */
  refused: string | null;
  error: string | null;
  /** The error's kind (E_MISSING: the mirror lacks the image; E_BROKEN: unreachable). */
  errorCode: string | null;
  /** Probing was cut short by the deadline. */
  partial: boolean;
}

export interface Ranking {
  name: string;
  ms: number;
  mirrors: MirrorRank[];
}

const LOSS_PENALTY_MS = 2000;
/** Block objects fetched per mirror to measure what a block really costs. */
const PROBE_BLOCKS = 3;

function tcpConnectMs(url: string, timeoutMs: number): Promise<number | null> {
  const u = new URL(url);
  const port = Number(u.port || (u.protocol === 'https:' ? 443 : 80));
  const host = u.hostname.replace(/^\[|\]$/g, '');
  return new Promise((resolve) => {
    const t0 = performance.now();
    const sock = net.connect({ host, port });
    const done = (v: number | null) => {
      clearTimeout(timer);
      sock.destroy();
      resolve(v);
    };
    const timer = setTimeout(() => done(null), timeoutMs);
    sock.once('connect', () => done(performance.now() - t0));
    sock.once('error', () => done(null));
  });
}

async function icmpMs(url: string): Promise<number | null> {
  try {
    const { promise } = (await import('ping')) as typeof import('ping');
    // Three echoes 0.2 s apart (the shortest interval iputils allows without root): at ping's default of
    // one a second three echoes outlast the ranking's deadline, and the column would stay empty.
    const r = await promise.probe(new URL(url).hostname.replace(/^\[|\]$/g, ''), { timeout: 1, min_reply: 3, extra: ['-i', '0.2'] });
    const avg = Number(r.avg);
    return r.alive && Number.isFinite(avg) ? avg : null;
  } catch {
    return null; // no ping binary, no permission, or ICMP filtered
  }
}

export function scoreOf(r: Pick<MirrorRank, 'ttfbMs' | 'blockMs' | 'throughputMBps' | 'loss' | 'ok'>, objectBytes: number): number {
  if (r.ok === 0 || r.ttfbMs === null) return Infinity;
  let perBlock = r.blockMs;
  if (perBlock === null) {
    // No block measured (partial mirror, or cut short): estimate, assuming
    // an unknown bandwidth is no better than 1 MB/s rather than free.
    const bytesPerMs = r.throughputMBps !== null ? r.throughputMBps * 1000 : 1000;
    perBlock = r.ttfbMs + objectBytes / bytesPerMs;
  }
  return perBlock * (1 + r.loss) + r.loss * LOSS_PENALTY_MS;
}

/** Block objects to probe with: real ones of about the median size, the same for every mirror. */
export function probeBlocks(m: Manifest, count = PROBE_BLOCKS): { hash: string; size: number }[] {
  const all = [...m.objectSizes].map(([hash, size]) => ({ hash, size }));
  if (all.length === 0) return [];
  const sorted = [...all].sort((a, b) => a.size - b.size || (a.hash < b.hash ? -1 : 1));
  const mid = sorted.length >> 1;
  return sorted.slice(Math.max(0, mid - (count >> 1)), Math.max(0, mid - (count >> 1)) + count);
}

interface Progress {
  phase: 'pointer' | 'manifest' | 'block' | 'done';
  phaseStart: number;
  manifestBytes: number;
}

/** Probes one mirror; `live` holds what was measured so far (read at the deadline). */
async function probe(
  m: Mirror,
  o: Required<Omit<RankOptions, 'objectBytes' | 'manifests' | 'key' | 'signal'>> & { key: PublicKey | undefined },
  live: MirrorRank,
  prog: Progress,
  signal: AbortSignal,
  onUpdate: () => void,
  verified: Map<string, { rel: string; bytes: Buffer; manifest: Manifest }>,
): Promise<void> {
  const connects: number[] = [];
  const ttfbs: number[] = [];
  const connectJob = o.viaProxy || !isUrl(m.url)
    ? Promise.resolve()
    : (async () => {
        for (let i = 0; i < o.rounds && !signal.aborted; i++) {
          const c = await tcpConnectMs(m.url, o.deadlineMs);
          if (c !== null) connects.push(c);
          live.connectMs = connects.length ? median(connects) : null;
        }
      })();
  const icmpJob = o.icmp ? icmpMs(m.url).then((v) => void (live.icmpMs = v)) : Promise.resolve();
  let pointer: Pointer | undefined;
  for (let i = 0; i < o.rounds && !signal.aborted; i++) {
    live.rounds++;
    const timing: RequestTiming = { ttfbMs: 0, bodyMs: 0 };
    try {
      const body = await m.read(pointerPath(o.name), { fresh: true, maxBytes: POINTER_MAX_BYTES, timing, signal });
      const p = decodePointer(body, `pointer from ${m.url}`);
      if (p.name !== o.name) throw new InvalidError(m.url, `${pointerPath(o.name)} in ${m.url} names image '${p.name}', not '${o.name}'`);
      live.claimed = p.version;
      pointer = p;
      ttfbs.push(timing.ttfbMs);
      live.ok++;
      live.ttfbMs = median(ttfbs);
    } catch (e) {
      if (signal.aborted) break;
      live.error = e instanceof Error ? e.message : String(e);
      live.errorCode = e instanceof HfkError ? e.code : 'E_BROKEN';
    }
    live.loss = live.rounds ? 1 - live.ok / live.rounds : 0;
    onUpdate();
  }
  let manifest: Manifest | undefined;
  if (pointer && !signal.aborted) {
    const rel = manifestPath(o.name, pointer.version);
    Object.assign(prog, { phase: 'manifest', phaseStart: performance.now(), manifestBytes: Math.min(pointer.size, MANIFEST_MAX_BYTES) });
    const timing: RequestTiming = { ttfbMs: 0, bodyMs: 0 };
    try {
      const maxBytes = manifestReadLimit(pointer, `pointer from ${m.url}`);
      const body = await m.read(rel, { timing, signal, maxBytes });
      if (body.length >= 16 * 1024 && timing.bodyMs > 0) live.throughputMBps = body.length / 1000 / Math.max(timing.bodyMs, 0.05);
      if (o.key) {
        manifest = checkManifest(m, o.name, pointer, o.key, rel, body, verified);
        live.version = pointer.version;
      }
    } catch (e) {
      if (!signal.aborted) {
        const why = e instanceof Error ? e.message : String(e);
        live.error = why;
        live.errorCode = e instanceof HfkError ? e.code : 'E_BROKEN';
        if (o.key) live.refused = `its pointer claims v${pointer.version}, but that manifest cannot be used: ${why}`;
        if (e instanceof InvalidError) m.book(e);
      }
    }
  }
  if (manifest && o.blocks && !signal.aborted) {
    const times: number[] = [];
    for (const b of probeBlocks(manifest)) {
      if (signal.aborted) break;
      Object.assign(prog, { phase: 'block', phaseStart: performance.now() });
      const timing: RequestTiming = { ttfbMs: 0, bodyMs: 0 };
      try {
        const body = await m.read(blockPath(b.hash), { timing, signal, expectedSize: b.size });
        times.push(timing.ttfbMs + timing.bodyMs);
        // The fastest fetch: delays on this side (a busy event loop, other
        // probes) only ever add time, so the minimum is the link's own cost.
        live.blockMs = Math.min(...times);
        if (timing.bodyMs > 0 && (live.throughputMBps === null || body.length >= 16 * 1024)) {
          live.throughputMBps = body.length / 1000 / Math.max(timing.bodyMs, 0.05);
        }
      } catch (e) {
        if (!signal.aborted) live.error = e instanceof Error ? e.message : String(e);
      }
      onUpdate();
    }
  }
  prog.phase = 'done';
  await Promise.all([connectJob, icmpJob]);
  live.partial = false;
  onUpdate();
}

/**
 * The manifest a mirror's pointer names, checked: the digest the pointer
 * gives, then the signature on the raw bytes, then decoded (once per
 * digest: twenty mirrors decoding the same bytes at once would stall the
 * event loop while others are being timed), then its name and version.
 */
function checkManifest(
  m: Mirror,
  name: string,
  p: Pointer,
  key: PublicKey,
  rel: string,
  body: Buffer,
  verified: Map<string, { rel: string; bytes: Buffer; manifest: Manifest }>,
): Manifest {
  const digest = manifestDigest(body);
  if (digest !== p.sha256) {
    throw new InvalidError(m.url, `${rel} in ${m.url} has SHA-256 ${digest.slice(0, 12)}…, its pointer says ${p.sha256.slice(0, 12)}…`);
  }
  const known = verified.get(digest);
  if (known) return known.manifest;
  const manifest = decodeManifest(body, key, `${rel} in ${m.url}`);
  if (manifest.header.name !== name || manifest.header.version !== p.version) {
    throw new InvalidError(m.url, `${rel} in ${m.url} describes ${manifest.header.name} v${manifest.header.version}, not ${name} v${p.version}`);
  }
  verified.set(digest, { rel, bytes: body, manifest });
  return manifest;
}

/**
 * Ranks mirrors, best first, and seeds their health with what
 * was measured. Returns within about `deadlineMs` even if some never answer,
 * and much sooner once no mirror still probing can beat the best one.
 */
export async function rankMirrors(mirrors: readonly Mirror[], options: RankOptions): Promise<Ranking> {
  const o = {
    rounds: options.rounds ?? 3,
    deadlineMs: options.deadlineMs ?? 1500,
    icmp: options.icmp ?? false,
    viaProxy: options.viaProxy ?? false,
    blocks: options.blocks ?? true,
    name: options.name,
    key: options.key,
  };
  const t0 = performance.now();
  const ac = new AbortController();
  const lives = mirrors.map(
    (m): MirrorRank => ({
      url: m.url,
      connectMs: null,
      ttfbMs: null,
      blockMs: null,
      throughputMBps: null,
      icmpMs: null,
      rounds: 0,
      ok: 0,
      loss: 0,
      score: Infinity,
      version: null,
      claimed: null,
      refused: null,
      error: null,
      errorCode: null,
      partial: true,
    }),
  );
  const progress = lives.map((): Progress => ({ phase: 'pointer', phaseStart: t0, manifestBytes: 0 }));
  const objectBytes = options.objectBytes ?? 32 * 1024;
  // Stop early once no mirror still probing can beat the best finished one.
  // A lower bound on a mirror's cost per block: its TTFB, or how long its
  // current request has been waiting (scaled from manifest to block size).
  let recheck: NodeJS.Timeout | undefined;
  let finish!: () => void;
  const finished = new Promise<void>((resolve) => (finish = resolve));
  const evaluate = () => {
    const now = performance.now();
    const done = lives.filter((r) => !r.partial);
    if (done.length === lives.length) return finish();
    // Only a mirror with the newest verified version can set the bar (without a key: any).
    const newest = Math.max(0, ...lives.map((r) => r.version ?? 0));
    const best = Math.min(...done.filter((r) => !o.key || r.version === newest).map((r) => scoreOf(r, objectBytes)));
    if (!Number.isFinite(best)) return;
    const bound = (i: number) => {
      const r = lives[i]!;
      const p = progress[i]!;
      const waiting = now - p.phaseStart;
      const scaled = p.phase === 'manifest' && p.manifestBytes > 0 ? (waiting * objectBytes) / p.manifestBytes : waiting;
      return Math.max(r.ttfbMs ?? 0, p.phase === 'pointer' && r.ttfbMs !== null ? 0 : scaled);
    };
    const limit = best * 2 + 20;
    // A mirror claiming a newer version is waited for (up to the deadline) until its manifest verifies or fails.
    const claimsNewer = (r: MirrorRank) => o.key !== undefined && r.version === null && !r.refused && (r.claimed ?? 0) > newest;
    const pending = lives.map((r, i) => (r.partial ? i : -1)).filter((i) => i >= 0);
    if (pending.every((i) => bound(i) > limit && !claimsNewer(lives[i]!))) return finish();
    clearTimeout(recheck);
    recheck = setTimeout(evaluate, 10);
  };
  const verified = new Map<string, { rel: string; bytes: Buffer; manifest: Manifest }>();
  const stop = () => finish();
  if (options.signal?.aborted) finish();
  options.signal?.addEventListener('abort', stop, { once: true });
  const jobs = mirrors.map((m, i) => probe(m, o, lives[i]!, progress[i]!, ac.signal, evaluate, verified).catch(() => {}));
  const deadline = setTimeout(finish, o.deadlineMs);
  void Promise.all(jobs).then(() => finish());
  await finished;
  options.signal?.removeEventListener('abort', stop);
  for (const d of verified.values()) options.manifests?.set(d.rel, d.bytes);
  clearTimeout(deadline);
  clearTimeout(recheck);
  ac.abort();
  for (const r of lives) {
    if (r.partial && r.ok === 0 && !r.error) r.error = `no answer within ${Math.round(performance.now() - t0)} ms`;
    r.score = scoreOf(r, objectBytes);
  }
  // Best first: mirrors fully measured with the newest verified version, by
  // score; then those cut short (probing was stopped because they could no
  // longer win, or time ran out), by their estimate; then those that never
  // answered in time; then stale mirrors (they only have an older version)
  // and those whose pointer's claim did not verify; then those that failed.
  // An unverified claim only ever counts against its mirror: claiming an
  // older version than the newest verified one makes it stale.
  const newest = Math.max(0, ...lives.map((r) => r.version ?? 0));
  const unverified = (r: MirrorRank) => o.key !== undefined && r.version === null && !r.partial;
  const stale = (r: MirrorRank) => (r.version ?? r.claimed ?? newest) < newest;
  const klass = (r: MirrorRank) => (r.ok === 0 ? (r.partial ? 2 : 4) : stale(r) || unverified(r) ? 3 : r.partial ? 1 : 0);
  const order = lives.map((r, i) => ({ r, m: mirrors[i]! }));
  order.sort((a, b) => klass(a.r) - klass(b.r) || a.r.score - b.r.score);
  for (const { r, m } of order) {
    if (r.ttfbMs !== null) m.health.seed(r.ttfbMs, r.throughputMBps !== null ? r.throughputMBps * 1000 : undefined);
    else m.health.broken(Date.now());
  }
  return { name: options.name, ms: performance.now() - t0, mirrors: order.map((x) => x.r) };
}

/** A table like netselect's, best mirror first. */
export function formatRanking(r: Ranking): string {
  const f = (v: number | null, d = 1) => (v === null ? '-' : v.toFixed(d));
  const w = Math.max(6, ...r.mirrors.map((m) => m.url.length));
  const rows = [
    `${'#'.padStart(2)}  ${'mirror'.padEnd(w)}  ${'connect'.padStart(8)}  ${'TTFB'.padStart(8)}  ${'block'.padStart(8)}  ${'MB/s'.padStart(7)}  ${'ICMP'.padStart(7)}  ${'loss'.padStart(5)}  ${'score'.padStart(8)}  version`,
  ];
  r.mirrors.forEach((m, i) => {
    rows.push(
      `${String(i + 1).padStart(2)}  ${m.url.padEnd(w)}  ${`${f(m.connectMs)} ms`.padStart(8)}  ${`${f(m.ttfbMs)} ms`.padStart(8)}  ${`${f(m.blockMs)} ms`.padStart(8)}  ${f(m.throughputMBps).padStart(7)}  ${m.icmpMs === null ? '-'.padStart(7) : `${f(m.icmpMs)} ms`.padStart(7)}  ${`${Math.round(m.loss * 100)}%`.padStart(5)}  ${(Number.isFinite(m.score) ? m.score.toFixed(1) : 'dead').padStart(8)}  ${m.version ?? (m.claimed !== null ? `${m.claimed}?` : '-')}${m.error && m.ok === 0 ? `  (${m.error})` : m.refused ? `  (${m.refused})` : ''}`,
    );
  });
  rows.push(`ranked ${r.mirrors.length} mirror${r.mirrors.length === 1 ? '' : 's'} in ${Math.round(r.ms)} ms`);
  return `${rows.join('\n')}\n`;
}
