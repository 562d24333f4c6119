import { describe, expect, it } from 'vitest';
import { MAX_FRAMING_BYTES, MAX_HEAD_BYTES, MAX_INTERIM, parseHead, type ResponseHead, ResponseParseError, ResponseParser } from './h1parse.ts';

// What the parser said, in order. Consecutive body slices are joined, so a
// stream cut anywhere must give exactly the same list as the stream whole.
type Event = { head: ResponseHead } | { data: string } | 'end';

function recorder() {
  const events: Event[] = [];
  let emptySlices = 0;
  const parser = new ResponseParser({
    onHead: (head) => events.push({ head }),
    onData: (buf, start, end) => {
      if (end <= start) emptySlices++;
      const text = buf.toString('latin1', start, end);
      const last = events[events.length - 1];
      if (last !== undefined && typeof last === 'object' && 'data' in last) last.data += text;
      else events.push({ data: text });
    },
    onEnd: () => events.push('end'),
  });
  return { parser, events, emptySlices: () => emptySlices };
}

function head(status: number, more: Partial<ResponseHead> = {}): { head: ResponseHead } {
  return { head: { status, minor: 1, contentLength: undefined, chunked: false, close: false, ...more } };
}

const bytes = (s: string) => Buffer.from(s, 'latin1');

/** Feeds the whole stream at once, then each cut of it: every cut gives the same events. */
function everyCut(stream: Buffer, eof = false): Event[] {
  const whole = recorder();
  whole.parser.feed(stream);
  if (eof) whole.parser.eof();
  for (let i = 0; i <= stream.length; i++) {
    // Two buffers of their own (the head or a chunk line kept across reads) ...
    const two = recorder();
    two.parser.feed(Buffer.from(stream.subarray(0, i)));
    two.parser.feed(Buffer.from(stream.subarray(i)));
    if (eof) two.parser.eof();
    expect(two.events, `cut at ${i}`).toEqual(whole.events);
    // ... and ranges of one buffer (what `end` short of the buffer's length must respect).
    const ranges = recorder();
    ranges.parser.feed(stream, 0, i);
    ranges.parser.feed(stream, i, stream.length);
    if (eof) ranges.parser.eof();
    expect(ranges.events, `range cut at ${i}`).toEqual(whole.events);
    expect(two.emptySlices() + ranges.emptySlices()).toBe(0);
  }
  const byByte = recorder();
  for (let i = 0; i < stream.length; i++) byByte.parser.feed(stream.subarray(i, i + 1));
  if (eof) byByte.parser.eof();
  expect(byByte.events).toEqual(whole.events);
  return whole.events;
}

function parseError(f: () => void): ResponseParseError {
  try {
    f();
  } catch (e) {
    expect(e).toBeInstanceOf(ResponseParseError);
    return e as ResponseParseError;
  }
  throw new Error('expected a ResponseParseError');
}

describe('parseHead', () => {
  it('reads the status, the version, Content-Length and whether the server closes', () => {
    expect(parseHead('HTTP/1.1 200 OK\r\nServer: x\r\nContent-Length: 12')).toEqual({ status: 200, minor: 1, contentLength: 12, chunked: false, close: false });
    expect(parseHead('HTTP/1.0 503 ')).toEqual({ status: 503, minor: 0, contentLength: undefined, chunked: false, close: true });
    expect(parseHead('HTTP/1.1 404')).toEqual({ status: 404, minor: 1, contentLength: undefined, chunked: false, close: true }); // no reason phrase; body until close
    expect(parseHead('HTTP/1.1 200 OK\r\ncontent-length:  7 \r\nCONNECTION: Close')).toEqual({ status: 200, minor: 1, contentLength: 7, chunked: false, close: true });
  });

  it('HTTP/1.0 closes after the response unless it says keep-alive', () => {
    expect(parseHead('HTTP/1.0 200 OK\r\nContent-Length: 2').close).toBe(true);
    expect(parseHead('HTTP/1.0 200 OK\r\nContent-Length: 2\r\nConnection: Keep-Alive')).toEqual({ status: 200, minor: 0, contentLength: 2, chunked: false, close: false });
    expect(parseHead('HTTP/1.1 200 OK\r\nContent-Length: 2\r\nConnection: keep-alive').close).toBe(false);
    // Connection is a list, and may come in several lines.
    expect(parseHead('HTTP/1.1 200 OK\r\nContent-Length: 2\r\nConnection: keep-alive, close').close).toBe(true);
    expect(parseHead('HTTP/1.1 200 OK\r\nContent-Length: 2\r\nConnection: upgrade\r\nConnection: close').close).toBe(true);
  });

  it('Transfer-Encoding: chunked frames the body; a Content-Length beside it is ignored', () => {
    expect(parseHead('HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked')).toEqual({ status: 200, minor: 1, contentLength: undefined, chunked: true, close: false });
    expect(parseHead('HTTP/1.1 200 OK\r\nContent-Length: 5\r\nTransfer-Encoding: gzip, Chunked')).toEqual({ status: 200, minor: 1, contentLength: undefined, chunked: true, close: false });
    expect(parseHead('HTTP/1.1 200 OK\r\nTransfer-Encoding: gzip\r\nTransfer-Encoding: chunked').chunked).toBe(true);
  });

  it('Transfer-Encoding without chunked last: the body runs until the connection closes', () => {
    expect(parseHead('HTTP/1.1 200 OK\r\nTransfer-Encoding: gzip')).toEqual({ status: 200, minor: 1, contentLength: undefined, chunked: false, close: true });
    expect(parseHead('HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked, gzip\r\nContent-Length: 9')).toEqual({ status: 200, minor: 1, contentLength: undefined, chunked: false, close: true });
  });

  it('204 and 304 without a length keep the connection (they have no body)', () => {
    expect(parseHead('HTTP/1.1 204 No Content').close).toBe(false);
    expect(parseHead('HTTP/1.1 304 Not Modified\r\nContent-Length: 100')).toEqual({ status: 304, minor: 1, contentLength: 100, chunked: false, close: false });
  });

  it('refuses two different Content-Length values, and accepts the same one twice', () => {
    expect(parseError(() => parseHead('HTTP/1.1 200 OK\r\nContent-Length: 5\r\nContent-Length: 6')).message).toBe('two different Content-Length values: 5 and 6');
    expect(parseHead('HTTP/1.1 200 OK\r\nContent-Length: 5\r\nContent-Length: 5').contentLength).toBe(5);
  });

  it('refuses a Content-Length that is not a plain number', () => {
    for (const v of ['-1', '5, 5', '0x10', '1e3', '', '1234567890123456']) {
      expect(parseError(() => parseHead(`HTTP/1.1 200 OK\r\nContent-Length: ${v}`)).message).toBe(`bad Content-Length: '${v}'`);
    }
  });

  it('refuses a status line that is not HTTP/1.x, and header lines without a name', () => {
    for (const line of ['HTTP/2 200 OK', 'HTTP/1.1 20 OK', 'HTTP/1.2 200 OK', 'ICY 200 OK', 'http/1.1 200 OK', 'HTTP/1.1 200OK', '', 'HTTP/1.1  200 OK', 'HTTP/1.1 2x0 OK', 'HTTP/1.1 200 O\nK', 'HTTP/1.1 200\r', 'HTTP/1.1 2000']) {
      expect(parseError(() => parseHead(`${line}\r\nContent-Length: 0`)).message).toBe(`not an HTTP/1.x status line: '${line}'`);
    }
    expect(parseError(() => parseHead('HTTP/1.1 200 OK\r\nno colon here')).message).toBe("malformed header line: 'no colon here'");
    expect(parseError(() => parseHead('HTTP/1.1 200 OK\r\n: no name')).message).toBe("malformed header line: ': no name'");
    // The colon of the next line does not make this one a header.
    expect(parseError(() => parseHead('HTTP/1.1 200 OK\r\nno colon\r\nServer: x')).message).toBe("malformed header line: 'no colon'");
  });

  it('matches header names whole, in any case, around whitespace; other headers are skipped', () => {
    expect(parseHead('HTTP/1.1 200 OK\r\n Content-Length \t: 9\r\nCONTENT-length: 9').contentLength).toBe(9);
    // Longer names that start like the ones read are other headers.
    expect(parseHead('HTTP/1.1 200 OK\r\nContent-Length-X: 5\r\nConnectionX: close\r\nContent-Length: 3')).toEqual({ status: 200, minor: 1, contentLength: 3, chunked: false, close: false });
    expect(parseHead('HTTP/1.1 200 OK\r\nX-Transfer-Encoding: chunked\r\nContent-Length: 3').chunked).toBe(false);
    // Values keep their colons; only their ends are trimmed.
    expect(parseHead('HTTP/1.1 200 OK\r\nLocation: http://a:80/\r\nContent-Length:\t4 ').contentLength).toBe(4);
  });
});

describe('ResponseParser', () => {
  it('a Content-Length response: head, the body as slices of the input, end', () => {
    const input = bytes('HTTP/1.1 200 OK\r\nContent-Length: 11\r\nContent-Type: text/plain\r\n\r\nhello world');
    const seen: Array<[Buffer, number, number]> = [];
    const { parser, events } = recorder();
    const spy = new ResponseParser({
      onHead: () => {},
      onData: (buf, start, end) => seen.push([buf, start, end]),
      onEnd: () => {},
    });
    parser.feed(input);
    spy.feed(input);
    expect(events).toEqual([head(200, { contentLength: 11 }), { data: 'hello world' }, 'end']);
    expect(parser.idle).toBe(true);
    // No copy: the body is handed on as a range of the buffer fed.
    expect(seen).toEqual([[input, input.length - 11, input.length]]);
    expect(seen[0]![0]).toBe(input);
  });

  it('a Content-Length of 0: head and end, nothing of the next response taken', () => {
    const { parser, events } = recorder();
    parser.feed(bytes('HTTP/1.1 200 OK\r\nContent-Length: 0\r\n\r\nHTTP/1.1 200 OK\r\nContent-Length: 1\r\n\r\nx'));
    expect(events).toEqual([head(200, { contentLength: 0 }), 'end', head(200, { contentLength: 1 }), { data: 'x' }, 'end']);
  });

  it('several pipelined responses in one buffer are split exactly', () => {
    const { parser, events } = recorder();
    parser.feed(
      bytes(
        'HTTP/1.1 200 OK\r\nContent-Length: 3\r\n\r\nabc' +
          'HTTP/1.1 404 Not Found\r\nContent-Length: 9\r\n\r\nnot found' +
          'HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n2\r\nde\r\n0\r\n\r\n' +
          'HTTP/1.1 200 OK\r\nContent-Length: 4\r\n\r\nHTTP',
      ),
    );
    expect(events).toEqual([
      head(200, { contentLength: 3 }),
      { data: 'abc' },
      'end',
      head(404, { contentLength: 9 }),
      { data: 'not found' },
      'end',
      head(200, { chunked: true }),
      { data: 'de' },
      'end',
      head(200, { contentLength: 4 }),
      { data: 'HTTP' }, // body bytes that look like a status line are body bytes
      'end',
    ]);
    expect(parser.idle).toBe(true);
  });

  it('gives the same events however the bytes are cut: at every position, and byte by byte', () => {
    const stream = bytes(
      'HTTP/1.1 100 Continue\r\n\r\n' +
        'HTTP/1.1 200 OK\r\nContent-Length: 10\r\n\r\n0123456789' +
        'HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n5;name=value\r\nabcde\r\n3\r\n\r\n\n\r\n0\r\nX-Trailer: 1\r\n\r\n' +
        'HTTP/1.1 204 No Content\r\n\r\n' +
        'HTTP/1.1 304 Not Modified\r\nContent-Length: 50\r\n\r\n' +
        'HTTP/1.1 410 Gone\r\nContent-Length: 2\r\n\r\n\r\n' +
        'HTTP/1.1 200 OK\r\nContent-Length: 4\r\nConnection: close\r\n\r\nlast',
    );
    expect(everyCut(stream)).toEqual([
      head(200, { contentLength: 10 }),
      { data: '0123456789' },
      'end',
      head(200, { chunked: true }),
      { data: 'abcde\r\n\n' }, // chunk data is taken by its size, CRLF and all
      'end',
      head(204),
      'end',
      head(304, { contentLength: 50 }),
      'end',
      head(410, { contentLength: 2 }),
      { data: '\r\n' },
      'end',
      head(200, { contentLength: 4, close: true }),
      { data: 'last' },
      'end',
    ]);
  });

  it('a body until the connection closes: every cut, completed by eof()', () => {
    const stream = bytes('HTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\nokHTTP/1.0 200 OK\r\nServer: old\r\n\r\nall of this, HTTP/1.1 200 OK\r\n\r\n and more');
    expect(everyCut(stream, true)).toEqual([
      head(200, { contentLength: 2 }),
      { data: 'ok' },
      'end',
      head(200, { minor: 0, close: true }),
      { data: 'all of this, HTTP/1.1 200 OK\r\n\r\n and more' },
      'end',
    ]);
  });

  it('a body until close has no end before eof(), and reports it', () => {
    const { parser, events } = recorder();
    parser.feed(bytes('HTTP/1.1 200 OK\r\nTransfer-Encoding: identity\r\n\r\nabc'));
    expect(events).toEqual([head(200, { close: true }), { data: 'abc' }]);
    expect(parser.endsAtClose).toBe(true);
    expect(parser.idle).toBe(false);
    parser.eof();
    expect(events).toEqual([head(200, { close: true }), { data: 'abc' }, 'end']);
    expect(parser.endsAtClose).toBe(false);
    expect(parser.idle).toBe(true);
  });

  it('chunked: extensions ignored, trailers skipped, the chunks joined', () => {
    const stream = bytes(
      'HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n' +
        'A;ext="x y"\r\n0123456789\r\n' +
        '1b  ;a=b;c\r\nabcdefghijklmnopqrstuvwxyz!\r\n' +
        '0;last\r\nExpires: never\r\nX-Sum: abc\r\n\r\n' +
        'HTTP/1.1 200 OK\r\nContent-Length: 1\r\n\r\nz',
    );
    expect(everyCut(stream)).toEqual([
      head(200, { chunked: true }),
      { data: '0123456789abcdefghijklmnopqrstuvwxyz!' },
      'end',
      head(200, { contentLength: 1 }),
      { data: 'z' },
      'end',
    ]);
  });

  it('refuses broken chunked framing', () => {
    const start = 'HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n';
    const cases: Array<[string, string]> = [
      ['zz\r\n', "bad chunk size line: 'zz'"],
      ['-1\r\n', "bad chunk size line: '-1'"],
      ['3\n', 'a chunked-encoding line without CRLF'],
      ['3\r\nabcd\r\n', 'chunk data longer than its declared size'],
      [`${'1'.repeat(5000)}`, 'a chunked-encoding line longer than 4096 bytes'],
    ];
    for (const [body, message] of cases) {
      const { parser } = recorder();
      expect(parseError(() => parser.feed(bytes(start + body))).message).toBe(message);
    }
  });

  it('eof() in the middle of a response throws: in the head, in a sized body, in a chunked body', () => {
    for (const partial of ['HTTP/1.1 200 OK\r\nContent-Le', 'HTTP/1.1 200 OK\r\nContent-Length: 5\r\n\r\nabc', 'HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n5\r\nab', 'HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n0\r\n']) {
      const { parser, events } = recorder();
      parser.feed(bytes(partial));
      expect(parser.idle).toBe(false);
      expect(parseError(() => parser.eof()).message).toBe('the connection closed in the middle of a response');
      expect(events).not.toContain('end');
    }
  });

  it('eof() between responses is a clean close', () => {
    const { parser, events } = recorder();
    parser.feed(bytes('HTTP/1.1 200 OK\r\nContent-Length: 1\r\n\r\nx'));
    parser.eof();
    expect(events).toEqual([head(200, { contentLength: 1 }), { data: 'x' }, 'end']);
  });

  it('skips 1xx interim responses and reports only the final one', () => {
    const { parser, events } = recorder();
    parser.feed(bytes('HTTP/1.1 100 Continue\r\n\r\nHTTP/1.1 103 Early Hints\r\nLink: </a>; rel=preload\r\n\r\nHTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\nok'));
    expect(events).toEqual([head(200, { contentLength: 2 }), { data: 'ok' }, 'end']);
  });

  it('refuses 101 Switching Protocols', () => {
    const { parser } = recorder();
    expect(parseError(() => parser.feed(bytes('HTTP/1.1 101 Switching Protocols\r\nUpgrade: websocket\r\n\r\n'))).message).toMatch(/switched protocols \(101\)/);
  });

  it('204 and 304 have no body, whatever their headers say; the next response follows at once', () => {
    const { parser, events } = recorder();
    parser.feed(bytes('HTTP/1.1 204 No Content\r\nContent-Length: 10\r\n\r\nHTTP/1.1 304 Not Modified\r\nTransfer-Encoding: chunked\r\n\r\nHTTP/1.1 200 OK\r\nContent-Length: 1\r\n\r\n!'));
    expect(events).toEqual([head(204, { contentLength: 10 }), 'end', head(304, { chunked: true }), 'end', head(200, { contentLength: 1 }), { data: '!' }, 'end']);
    expect(parser.idle).toBe(true);
  });

  it('HTTP/1.0 responses close unless they say keep-alive; Connection: close is reported on HTTP/1.1', () => {
    const { parser, events } = recorder();
    parser.feed(bytes('HTTP/1.0 200 OK\r\nConnection: keep-alive\r\nContent-Length: 1\r\n\r\na'));
    parser.feed(bytes('HTTP/1.1 200 OK\r\nConnection: close\r\nContent-Length: 1\r\n\r\nb'));
    parser.feed(bytes('HTTP/1.0 200 OK\r\nContent-Length: 1\r\n\r\nc'));
    expect(events).toEqual([
      head(200, { minor: 0, contentLength: 1, close: false }),
      { data: 'a' },
      'end',
      head(200, { contentLength: 1, close: true }),
      { data: 'b' },
      'end',
      head(200, { minor: 0, contentLength: 1, close: true }),
      { data: 'c' },
      'end',
    ]);
  });

  it('refuses conflicting Content-Length values and a garbage status line, fed as bytes', () => {
    const a = recorder();
    expect(parseError(() => a.parser.feed(bytes('HTTP/1.1 200 OK\r\nContent-Length: 3\r\nContent-Length: 4\r\n\r\nabcd'))).message).toBe('two different Content-Length values: 3 and 4');
    expect(a.events).toEqual([]);
    const b = recorder();
    expect(parseError(() => b.parser.feed(bytes('SSH-2.0-OpenSSH_9.6\r\n\r\n'))).message).toBe("not an HTTP/1.x status line: 'SSH-2.0-OpenSSH_9.6'");
    // Bytes after a complete response that are not a response.
    const c = recorder();
    expect(parseError(() => c.parser.feed(bytes('HTTP/1.1 200 OK\r\nContent-Length: 1\r\n\r\nxx\r\n\r\n'))).message).toBe("not an HTTP/1.x status line: 'x'");
    expect(c.events).toEqual([head(200, { contentLength: 1 }), { data: 'x' }, 'end']);
  });

  it('refuses a head longer than MAX_HEAD_BYTES, however it arrives', () => {
    const big = `HTTP/1.1 200 OK\r\nX-Big: ${'a'.repeat(MAX_HEAD_BYTES)}`;
    // Unfinished, in one piece.
    expect(parseError(() => recorder().parser.feed(bytes(big))).message).toBe(`response head longer than ${MAX_HEAD_BYTES} bytes`);
    // Unfinished, in pieces.
    const pieces = recorder();
    const e = parseError(() => {
      for (let i = 0; i < big.length; i += 1000) pieces.parser.feed(bytes(big.slice(i, i + 1000)));
    });
    expect(e.message).toBe(`response head longer than ${MAX_HEAD_BYTES} bytes`);
    // Finished, in one piece and in pieces.
    const finished = bytes(`${big}\r\nContent-Length: 0\r\n\r\n`);
    expect(parseError(() => recorder().parser.feed(finished)).message).toBe(`response head longer than ${MAX_HEAD_BYTES} bytes`);
    for (const cut of [10, MAX_HEAD_BYTES - 10, finished.length - 3]) {
      const r = recorder();
      expect(parseError(() => (r.parser.feed(finished.subarray(0, cut)), r.parser.feed(finished.subarray(cut)))).message).toBe(`response head longer than ${MAX_HEAD_BYTES} bytes`);
    }
  });

  it('accepts a head of exactly MAX_HEAD_BYTES (its blank line included), however it arrives', () => {
    const start = 'HTTP/1.1 200 OK\r\nContent-Length: 1\r\nX-Fill: ';
    const fill = MAX_HEAD_BYTES - start.length - 4;
    const stream = bytes(`${start}${'f'.repeat(fill)}\r\n\r\n!`);
    expect(stream.length).toBe(MAX_HEAD_BYTES + 1);
    for (const cut of [0, 1, 1000, MAX_HEAD_BYTES - 4, MAX_HEAD_BYTES - 1, MAX_HEAD_BYTES]) {
      const r = recorder();
      r.parser.feed(stream.subarray(0, cut));
      r.parser.feed(stream.subarray(cut));
      expect(r.events).toEqual([head(200, { contentLength: 1 }), { data: '!' }, 'end']);
    }
  });
});

describe('ResponseParser limits', () => {
  const feed = (text: string) => {
    const heads: ResponseHead[] = [];
    const p = new ResponseParser({ onHead: (h) => heads.push(h), onData: () => {}, onEnd: () => {} });
    p.feed(Buffer.from(text, 'latin1'));
    return heads;
  };

  it('reads the Location of a redirect', () => {
    expect(feed('HTTP/1.1 302 Found\r\nLocation: /there?x=1\r\nContent-Length: 0\r\n\r\n')[0]!.location).toBe('/there?x=1');
  });

  it('takes a few interim answers, not endless ones', () => {
    expect(feed(`${'HTTP/1.1 100 Continue\r\n\r\n'.repeat(MAX_INTERIM)}HTTP/1.1 200 OK\r\nContent-Length: 0\r\n\r\n`)[0]!.status).toBe(200);
    expect(() => feed('HTTP/1.1 100 Continue\r\n\r\n'.repeat(MAX_INTERIM + 1))).toThrow(/more than 8 interim \(1xx\) answers/);
  });

  it('refuses chunked framing (trailers, empty extensions) that outgrows its data', () => {
    const head = 'HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n';
    expect(feed(`${head}5\r\nhello\r\n0\r\nX-T: 1\r\n\r\n`)).toHaveLength(1);
    expect(() => feed(`${head}5\r\nhello\r\n0\r\n${'X-Trailer: more\r\n'.repeat(MAX_FRAMING_BYTES / 16 + 1)}`)).toThrow(ResponseParseError);
  });
});
