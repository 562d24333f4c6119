// Property tests of the HTTP/1.1 response parser: valid pipelined responses
// cut anywhere parse to exactly what was sent; random and mutated bytes end
// in a ResponseParseError or a clean parse, never another error or a hang.

import fc from 'fast-check';
import { describe, expect, it } from 'vitest';
import { type ResponseHead, ResponseParseError, ResponseParser } from './h1parse.ts';

interface Seen {
  heads: ResponseHead[];
  bodies: Buffer[];
  ends: number;
  dataBytes: number;
}

function parser(): { p: ResponseParser; seen: Seen } {
  const seen: Seen = { heads: [], bodies: [], ends: 0, dataBytes: 0 };
  let parts: Buffer[] = [];
  const p = new ResponseParser({
    onHead: (h) => {
      seen.heads.push(h);
      parts = [];
    },
    onData: (buf, start, end) => {
      parts.push(Buffer.from(buf.subarray(start, end)));
      seen.dataBytes += end - start;
    },
    onEnd: () => {
      seen.bodies.push(Buffer.concat(parts));
      seen.ends++;
    },
  });
  return { p, seen };
}

/** Feeds `bytes` cut at `cuts` (positions), then the end of the connection. */
function feedAll(p: ResponseParser, bytes: Buffer, cuts: number[], eof = true): void {
  const points = [...new Set(cuts.map((c) => c % (bytes.length + 1)))].sort((a, b) => a - b);
  let at = 0;
  for (const c of [...points, bytes.length]) {
    if (c < at) continue;
    p.feed(bytes, at, c);
    at = c;
  }
  if (eof) p.eof();
}

const token = fc.stringMatching(/^[A-Za-z][A-Za-z0-9-]{0,15}$/).filter((n) => !/^(content-length|transfer-encoding|connection|location)$/i.test(n));
const headerValue = fc.stringMatching(/^[ -~]{0,30}$/).map((v) => v.trim());

const response = fc.record({
  status: fc.constantFrom(200, 206, 404, 403, 500, 503, 301),
  interim: fc.nat(2),
  extra: fc.array(fc.tuple(token, headerValue), { maxLength: 4 }),
  body: fc.uint8Array({ maxLength: 300 }).map((u) => Buffer.from(u)),
  chunked: fc.boolean(),
  chunkSizes: fc.array(fc.integer({ min: 1, max: 64 }), { maxLength: 8 }),
});
type Response = typeof response extends fc.Arbitrary<infer T> ? T : never;

function encode(r: Response): Buffer {
  const lines = [`HTTP/1.1 ${r.status} X`, ...r.extra.map(([n, v]) => `${n}: ${v}`)];
  const interim = Buffer.from('HTTP/1.1 100 Continue\r\n\r\n'.repeat(r.interim));
  if (!r.chunked) {
    lines.push(`Content-Length: ${r.body.length}`);
    return Buffer.concat([interim, Buffer.from(`${lines.join('\r\n')}\r\n\r\n`, 'latin1'), r.body]);
  }
  lines.push('Transfer-Encoding: chunked');
  const parts: Buffer[] = [interim, Buffer.from(`${lines.join('\r\n')}\r\n\r\n`, 'latin1')];
  let at = 0;
  for (let i = 0; at < r.body.length; i++) {
    const n = Math.min(r.chunkSizes[i % Math.max(1, r.chunkSizes.length)] ?? 16, r.body.length - at);
    parts.push(Buffer.from(`${n.toString(16)}\r\n`), r.body.subarray(at, at + n), Buffer.from('\r\n'));
    at += n;
  }
  parts.push(Buffer.from('0\r\n\r\n'));
  return Buffer.concat(parts);
}

/** Runs the parser over bytes; returns what it saw, or the error it threw. */
function run(bytes: Buffer, cuts: number[]): { seen: Seen; error: unknown } {
  const { p, seen } = parser();
  try {
    feedAll(p, bytes, cuts);
    return { seen, error: undefined };
  } catch (e) {
    return { seen, error: e };
  }
}

describe('HTTP/1.1 response parser (property)', () => {
  it('pipelined valid responses cut at any places parse to exactly their statuses and bodies', { timeout: 30_000 }, () => {
    fc.assert(
      fc.property(fc.array(response, { minLength: 1, maxLength: 4 }), fc.array(fc.nat(), { maxLength: 12 }), (rs, cuts) => {
        const bytes = Buffer.concat(rs.map(encode));
        const { seen, error } = run(bytes, cuts);
        expect(error).toBeUndefined();
        expect(seen.heads.map((h) => h.status)).toEqual(rs.map((r) => r.status));
        expect(seen.bodies).toEqual(rs.map((r) => r.body));
      }),
      { numRuns: 400 },
    );
  });

  it('random bytes: a ResponseParseError or a parse, never another error; never more body than bytes fed', { timeout: 30_000 }, () => {
    const junk = fc.oneof(
      fc.uint8Array({ maxLength: 400 }).map((u) => Buffer.from(u)),
      fc.array(fc.constantFrom('HTTP/1.1 ', '200', ' OK', '\r\n', '\r\n\r\n', 'Content-Length: ', '5', '-1', 'Transfer-Encoding: chunked', '0', 'ff', ';x', 'abc', ':', ' '), { maxLength: 40 }).map((a) => Buffer.from(a.join(''), 'latin1')),
    );
    fc.assert(
      fc.property(junk, fc.array(fc.nat(), { maxLength: 8 }), (bytes, cuts) => {
        const { seen, error } = run(bytes, cuts);
        if (error !== undefined) expect(error).toBeInstanceOf(ResponseParseError);
        expect(seen.dataBytes).toBeLessThanOrEqual(bytes.length);
        expect(seen.ends).toBeLessThanOrEqual(seen.heads.length);
      }),
      { numRuns: 2000 },
    );
  });

  it('mutated valid responses (bytes flipped, cut out or repeated): a ResponseParseError or a consistent parse', { timeout: 30_000 }, () => {
    const mutation = fc.record({ at: fc.nat(), kind: fc.constantFrom('flip', 'delete', 'duplicate', 'insert'), byte: fc.integer({ min: 0, max: 255 }), len: fc.integer({ min: 1, max: 20 }) });
    fc.assert(
      fc.property(fc.array(response, { minLength: 1, maxLength: 3 }), fc.array(mutation, { minLength: 1, maxLength: 4 }), fc.array(fc.nat(), { maxLength: 6 }), (rs, ms, cuts) => {
        let bytes = Buffer.concat(rs.map(encode));
        for (const m of ms) {
          const at = m.at % (bytes.length + 1);
          if (m.kind === 'flip' && at < bytes.length) bytes[at] = m.byte;
          else if (m.kind === 'delete') bytes = Buffer.concat([bytes.subarray(0, at), bytes.subarray(at + m.len)]);
          else if (m.kind === 'duplicate') bytes = Buffer.concat([bytes.subarray(0, at + m.len), bytes.subarray(at)]);
          else bytes = Buffer.concat([bytes.subarray(0, at), Buffer.alloc(m.len, m.byte), bytes.subarray(at)]);
        }
        const { seen, error } = run(bytes, cuts);
        if (error !== undefined) expect(error).toBeInstanceOf(ResponseParseError);
        expect(seen.dataBytes).toBeLessThanOrEqual(bytes.length);
        for (const [i, body] of seen.bodies.entries()) {
          const h = seen.heads[i]!;
          if (h.contentLength !== undefined && !h.chunked) expect(body.length).toBe(h.contentLength);
        }
      }),
      { numRuns: 1500 },
    );
  });
});
