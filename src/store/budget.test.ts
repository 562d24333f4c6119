import { describe, expect, it } from 'vitest';
import { UsageError } from '../errors.ts';
import { AnswerClock, formatRate, timeBudget } from './budget.ts';
import { MAX_REDIRECTS, Redirected, redirectTarget } from './response.ts';

const B = { headTimeoutMs: 1000, minBytesPerSec: 1024, graceMs: 500 };

describe('AnswerClock', () => {
  it('a head is due from when the request leaves; bytes of a trickled head do not extend it', () => {
    const c = new AnswerClock(B);
    expect(c.overdue(10_000)).toBeUndefined(); // not sent yet
    c.due(0);
    expect(c.overdue(1000, 40)).toBeUndefined();
    expect(c.overdue(1001, 40)).toBe('the server sent its headers too slowly (40 bytes in 1 s)');
    expect(c.overdue(1001, 0)).toBe('the server sent no answer within 1 s');
    expect(c.overdue(1001)).toBe('the server sent no whole response head within 1 s');
  });

  it('a body may be slow in its grace, then must keep the rate in every window', () => {
    const c = new AnswerClock(B);
    c.due(0);
    c.head(100);
    expect(c.overdue(599)).toBeUndefined(); // grace
    expect(c.overdue(600)).toBeUndefined(); // the first window starts
    c.data(600);
    expect(c.overdue(1100)).toBeUndefined(); // 600 bytes in 500 ms: above 1 KiB/s
    c.data(100);
    expect(c.overdue(1400)).toBeUndefined(); // the window is not over yet
    expect(c.overdue(1600)).toBe('the body came slower than 1 KiB/s (100 bytes in the last 500 ms)');
  });

  it('a body of known size has an absolute end: grace plus its size at the minimum rate', () => {
    const c = new AnswerClock(B);
    c.due(0);
    c.head(0, 2048);
    for (let t = 500; t <= 2500; t += 500) {
      c.data(600); // above the rate in every window
      expect(c.overdue(t)).toBeUndefined();
    }
    expect(c.overdue(2501)).toBe('the body came slower than 1 KiB/s (2048 bytes not complete in 2.5 s)');
  });

  it('refuses budgets it cannot use, and says rates plainly', () => {
    expect(() => timeBudget({ graceMs: 0 })).toThrow(UsageError);
    expect(() => timeBudget({ minBytesPerSec: Number.NaN })).toThrow(/minBytesPerSec must be a positive number: got NaN/);
    expect(timeBudget()).toEqual({ headTimeoutMs: 20_000, minBytesPerSec: 1024, graceMs: 10_000 });
    expect(formatRate(1024)).toBe('1 KiB/s');
    expect(formatRate(300)).toBe('300 bytes/s');
  });
});

describe('redirectTarget', () => {
  const M = 'http://m.example/hfk/';
  const hop = (chain: string[], location: string | undefined) => {
    const r = redirectTarget(M, chain, new Redirected(302, location));
    return r instanceof URL ? r.href : `${r.name}: ${r.message}`;
  };
  it.each([
    [['http://m.example/hfk/a'], 'b', 'http://m.example/hfk/b'],
    [['http://m.example/hfk/a'], '/x/y?z=1#frag', 'http://m.example/x/y?z=1'],
    [['http://m.example/hfk/a'], 'https://cdn.example/a', 'https://cdn.example/a'],
    [['https://m.example/a'], 'http://cdn.example/a', 'BrokenError: https://m.example/a: redirected from https down to plain http (http://cdn.example/a): refused'],
    [['http://m.example/a'], 'ftp://cdn.example/a', 'BrokenError: http://m.example/a: redirected to ftp: URL ftp://cdn.example/a: only http and https are followed'],
    [['http://m.example/a'], undefined, 'BrokenError: http://m.example/a: HTTP 302 without a Location to follow'],
    [['http://m.example/a', 'http://m.example/b'], '/a', 'BrokenError: http://m.example/a: redirects in a loop (http://m.example/a → http://m.example/b → http://m.example/a)'],
  ])('from %j to %s → %s', (chain, location, want) => {
    expect(hop(chain, location)).toBe(want);
  });

  it(`follows ${MAX_REDIRECTS} hops, not one more`, () => {
    const chain = (n: number) => Array.from({ length: n }, (_, i) => `http://m.example/${i}`);
    expect(hop(chain(MAX_REDIRECTS), '/next')).toBe('http://m.example/next');
    expect(hop(chain(MAX_REDIRECTS + 1), '/next')).toBe(`BrokenError: http://m.example/0: more than ${MAX_REDIRECTS} redirects (last to http://m.example/next)`);
  });
});
