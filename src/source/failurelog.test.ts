import { describe, expect, it } from 'vitest';
import { FailureLog } from './failurelog.ts';
import { MirrorGroup } from './group.ts';
import { Mirror } from './mirror.ts';
import { MemoryOrigin, testBlock } from './testing/memory.ts';
import { Timeline } from './timeline.ts';

function fixture() {
  let now = 1_000_000;
  const lines: string[] = [];
  const log = new FailureLog((l) => lines.push(l), { now: () => now });
  return { log, lines, advance: (ms: number) => (now += ms) };
}

describe('FailureLog', () => {
  it('says the first failure at once, with its reason and where the request went', () => {
    const { log, lines } = fixture();
    log.note('http://m1/', 'failed', 'http://m1/: timeout after 20 s', 'http://m2/');
    expect(lines).toEqual(['mirror http://m1/ failed: timeout after 20 s (switched to http://m2/)']);
  });

  it('holds the rest of the minute back and says how many there were with the next line', () => {
    const { log, lines, advance } = fixture();
    log.note('http://m1/', 'failed', 'HTTP 503', 'http://m2/');
    for (let i = 0; i < 11; i++) {
      advance(1000);
      log.note('http://m1/', 'failed', 'timeout after 20 s', 'http://m2/');
    }
    expect(lines).toHaveLength(1);
    advance(60_000);
    log.note('http://m1/', 'failed', 'timeout after 20 s', 'http://m2/');
    expect(lines[1]).toBe('mirror http://m1/ failed 12 times in the last minute: timeout after 20 s (switched to http://m2/)');
  });

  it('keeps one window per mirror and per kind', () => {
    const { log, lines } = fixture();
    log.note('http://m1/', 'failed', 'HTTP 503', 'http://m2/');
    log.note('http://m2/', 'failed', 'connection refused', null);
    log.note('http://m1/', 'corrupt', 'block 3 (abc…) does not match its hash', 'http://m2/');
    log.note('http://m1/', 'failed', 'HTTP 503', 'http://m2/');
    expect(lines).toEqual([
      'mirror http://m1/ failed: HTTP 503 (switched to http://m2/)',
      'mirror http://m2/ failed: connection refused (no other mirror left)',
      'mirror http://m1/ served a corrupt block: block 3 (abc…) does not match its hash (switched to http://m2/)',
    ]);
  });

  it('says what is held back on flush, once', () => {
    const { log, lines } = fixture();
    log.note('http://m1/', 'failed', 'HTTP 503');
    log.note('http://m1/', 'failed', 'HTTP 502');
    log.note('http://m1/', 'failed', 'HTTP 500');
    log.flush();
    log.flush();
    expect(lines).toEqual(['mirror http://m1/ failed: HTTP 503', 'mirror http://m1/ failed 2 more times in the last minute: HTTP 500']);
  });
});

describe('MirrorGroup with a failure log', () => {
  it('logs a dead mirror and a corrupt one once a minute each, naming the mirror it switched to, and records the switch', async () => {
    let now = 0;
    const lines: string[] = [];
    const failures = new FailureLog((l) => lines.push(l), { now: () => now });
    const origins = ['http://m1/', 'http://m2/', 'http://m3/'].map((u) => new MemoryOrigin(u));
    const blocks = [1, 2, 3, 4].map((s) => testBlock(s));
    for (const o of origins) for (const b of blocks) o.files.set(b.rel, b.object);
    origins[0]!.behaviour = 'broken';
    origins[1]!.behaviour = 'corrupt';
    let t = 5000;
    const timeline = new Timeline({ now: () => t });
    // Health never takes a mirror out: every request tries m1, then m2, then m3.
    const mirrors = origins.map((o) => new Mirror(o.location, o, { now: () => 0 }));
    const group = new MirrorGroup(mirrors, { hedge: false, explore: 0, failures, timeline });
    group.order = () => [...mirrors];
    for (const b of blocks) {
      const got = await group.get({ hash: b.hash, length: b.data.length });
      expect(got.from).toBe('http://m3/');
      t += 100;
    }
    expect(lines).toEqual([
      'mirror http://m1/ failed: HTTP 503 (switched to http://m2/)',
      expect.stringMatching(/^mirror http:\/\/m2\/ served a corrupt block: .* \(switched to http:\/\/m3\/\)$/),
    ]);
    now = 61_000;
    await group.get({ hash: blocks[0]!.hash, length: blocks[0]!.data.length });
    expect(lines[2]).toBe('mirror http://m1/ failed 4 times in the last minute: HTTP 503 (switched to http://m2/)');
    const stats = { bytesFetched: 0, blocksFetched: 0, diskHits: 0, hedges: 0, hedgesWon: 0, failovers: 0, retryRounds: 0, disk: null, mirrors: [] };
    group.stats(stats);
    expect(stats).toMatchObject({ mirror: 'http://m3/', timeline: { switches: [{ atMs: 5000, from: null, to: 'http://m3/' }] } });
    await group.close();
  });
});
