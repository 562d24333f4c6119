// The response side of HTTP/1.1 (RFC 9112) as the block client needs it: a
// pure, incremental parser fed whatever bytes a socket read returned. It
// finds each response's head, works out how its body is framed
// (Content-Length, chunked, or until the connection closes), hands body
// bytes on as slices of the input (no copy), and says where each response
// ends, so pipelined responses that share one read are split exactly.
//
// It knows nothing of sockets or requests: tests drive it with golden bytes
// cut at every possible place.

/** What the client needs from a response's head. */
export interface ResponseHead {
  status: number;
  /** 0 for HTTP/1.0, 1 for HTTP/1.1. */
  minor: number;
  /** Content-Length, when the body is framed by it. */
  contentLength: number | undefined;
  chunked: boolean;
  /** The server closes the connection after this response (Connection: close, or HTTP/1.0 without keep-alive). */
  close: boolean;
  /** The Location header (a redirect's target), as sent. */
  location?: string | undefined;
}

export interface ParserEvents {
  onHead(head: ResponseHead): void;
  /** Body bytes: `buf[start, end)`, valid only during the call. */
  onData(buf: Buffer, start: number, end: number): void;
  /** The response is complete; the next byte belongs to the next one. */
  onEnd(): void;
}

/** Bytes that are not an HTTP/1.x response: the connection cannot be used any more. */
export class ResponseParseError extends Error {
  override name = 'ResponseParseError';
}

/** Longest response head accepted (status line and headers). */
export const MAX_HEAD_BYTES = 64 * 1024;
/** Interim (1xx) answers accepted before one response's real head: a server sends one or two. */
export const MAX_INTERIM = 8;
/** Bytes of chunked framing (size lines, trailers) a body may have beyond its data's own size. */
export const MAX_FRAMING_BYTES = 64 * 1024;

const CRLF2 = Buffer.from('\r\n\r\n');

type State =
  | 'head' // waiting for (the rest of) a head
  | 'fixed' // Content-Length body: `left` bytes to go
  | 'close' // body until the connection closes
  | 'chunk-size' // reading a chunk-size line
  | 'chunk-data' // `left` bytes of chunk data
  | 'chunk-crlf' // the CRLF after chunk data
  | 'trailers'; // trailer lines until an empty one

/** Whitespace String.prototype.trim removes, as it occurs in a latin1 head. */
function isSpace(c: number): boolean {
  return c === 0x20 || (c >= 0x09 && c <= 0x0d) || c === 0xa0;
}

/**
 * Parses the head text (without the final blank line). Pure. Only the
 * headers it reads become strings: a block costs the reader one response,
 * and a copy of every header's name and value was most of what parsing a
 * response allocated (figures: docs/PERFORMANCE.md).
 */
export function parseHead(text: string): ResponseHead {
  const first = text.indexOf('\r\n');
  const statusLine = first < 0 ? text : text.slice(0, first);
  const m = /^HTTP\/1\.([01]) (\d{3})(?: .*)?$/.exec(statusLine);
  if (!m) throw new ResponseParseError(`not an HTTP/1.x status line: '${statusLine.slice(0, 80)}'`);
  const minor = Number(m[1]);
  const status = Number(m[2]);
  let contentLength: number | undefined;
  let te: string | undefined;
  let connection = '';
  let location: string | undefined;
  for (let at = first < 0 ? text.length : first + 2; first >= 0; ) {
    const next = text.indexOf('\r\n', at);
    const end = next < 0 ? text.length : next;
    const c = text.indexOf(':', at);
    if (c <= at || c >= end) throw new ResponseParseError(`malformed header line: '${text.slice(at, Math.min(end, at + 80))}'`);
    // Only names as long as one of the four read (8, 10, 14, 17 characters) become strings: most of a mirror's headers never do.
    let name: string | undefined;
    if (isSpace(text.charCodeAt(at)) || isSpace(text.charCodeAt(c - 1))) name = text.slice(at, c).trim().toLowerCase();
    else if (c - at === 8 || c - at === 10 || c - at === 14 || c - at === 17) name = text.slice(at, c).toLowerCase();
    if (name === 'content-length') {
      const v = text.slice(c + 1, end).trim();
      if (!/^\d{1,15}$/.test(v)) throw new ResponseParseError(`bad Content-Length: '${v.slice(0, 40)}'`);
      const n = Number(v);
      if (contentLength !== undefined && contentLength !== n) throw new ResponseParseError(`two different Content-Length values: ${contentLength} and ${n}`);
      contentLength = n;
    } else if (name === 'transfer-encoding') {
      const v = text.slice(c + 1, end).trim().toLowerCase();
      te = te === undefined ? v : `${te}, ${v}`;
    } else if (name === 'connection') connection += `,${text.slice(c + 1, end).trim().toLowerCase()}`;
    else if (name === 'location') location = text.slice(c + 1, end).trim();
    if (next < 0) break;
    at = next + 2;
  }
  const tokens = connection === '' ? [] : connection.split(',').map((t) => t.trim());
  const close = tokens.includes('close') || (minor === 0 && !tokens.includes('keep-alive'));
  const codings = te?.split(',').map((t) => t.trim()).filter(Boolean);
  const chunked = codings !== undefined && codings[codings.length - 1] === 'chunked';
  // A body without chunked framing under Transfer-Encoding ends with the connection (RFC 9112 §6.3).
  if (codings !== undefined) return { status, minor, contentLength: undefined, chunked, close: chunked ? close : true, location };
  return { status, minor, contentLength, chunked: false, close: close || (contentLength === undefined && hasBody(status)), location };
}

/** Responses that never have a body (RFC 9110: 1xx, 204, 304). */
function hasBody(status: number): boolean {
  return !(status < 200 || status === 204 || status === 304);
}

export class ResponseParser {
  private state: State = 'head';
  private left = 0;
  /** Interim answers seen before the current head. */
  private interim = 0;
  /** Data and framing bytes of the current chunked body: framing may not outgrow its data by more than MAX_FRAMING_BYTES. */
  private data = 0;
  private framing = 0;
  private halted = false;
  /** A head (or chunk-size/trailer line) split across reads. */
  private partial: Buffer | undefined;
  private readonly ev: ParserEvents;

  constructor(events: ParserEvents) {
    this.ev = events;
  }

  /** Whether the parser is between responses (nothing of the next one seen yet). */
  get idle(): boolean {
    return this.state === 'head' && this.partial === undefined;
  }

  /** Whether the response being read ends when the connection closes. */
  get endsAtClose(): boolean {
    return this.state === 'close';
  }

  /** Stops the parser for good: the rest of the bytes fed are ignored (the connection is being dropped). */
  halt(): void {
    this.halted = true;
  }

  /** Feeds `buf[start, end)`. Throws ResponseParseError on bytes that are not HTTP. */
  feed(buf: Buffer, start = 0, end = buf.length): void {
    let at = start;
    while (at < end && !this.halted) {
      switch (this.state) {
        case 'head':
          at = this.head(buf, at, end);
          break;
        case 'fixed': {
          const n = Math.min(this.left, end - at);
          this.ev.onData(buf, at, at + n);
          at += n;
          this.left -= n;
          if (this.left === 0) this.finish();
          break;
        }
        case 'close':
          this.ev.onData(buf, at, end);
          at = end;
          break;
        case 'chunk-data': {
          const n = Math.min(this.left, end - at);
          this.data += n;
          this.ev.onData(buf, at, at + n);
          at += n;
          this.left -= n;
          if (this.left === 0) this.state = 'chunk-crlf';
          break;
        }
        case 'chunk-size':
        case 'chunk-crlf':
        case 'trailers':
          at = this.line(buf, at, end);
          break;
      }
    }
  }

  /** The connection closed: completes a body that runs until then; anything else unfinished is an error. */
  eof(): void {
    if (this.state === 'close') return this.finish();
    if (!this.idle) throw new ResponseParseError('the connection closed in the middle of a response');
  }

  private finish(): void {
    this.state = 'head';
    this.ev.onEnd();
  }

  private head(buf: Buffer, at: number, end: number): number {
    let text: string;
    let next: number;
    if (this.partial === undefined) {
      const e = (end === buf.length ? buf : buf.subarray(0, end)).indexOf(CRLF2, at);
      if (e < 0) {
        if (end - at > MAX_HEAD_BYTES) throw new ResponseParseError(`response head longer than ${MAX_HEAD_BYTES} bytes`);
        this.partial = Buffer.from(buf.subarray(at, end));
        return end;
      }
      if (e + 4 - at > MAX_HEAD_BYTES) throw new ResponseParseError(`response head longer than ${MAX_HEAD_BYTES} bytes`);
      text = buf.toString('latin1', at, e);
      next = e + 4;
    } else {
      // At most the 3 bytes of the terminator can sit in what we kept: search from there.
      const from = Math.max(0, this.partial.length - 3);
      const joined = Buffer.concat([this.partial, buf.subarray(at, Math.min(end, at + MAX_HEAD_BYTES + 4))]);
      const e = joined.indexOf(CRLF2, from);
      if (e < 0) {
        if (joined.length > MAX_HEAD_BYTES) throw new ResponseParseError(`response head longer than ${MAX_HEAD_BYTES} bytes`);
        this.partial = joined;
        return Math.min(end, at + MAX_HEAD_BYTES + 4);
      }
      if (e + 4 > MAX_HEAD_BYTES) throw new ResponseParseError(`response head longer than ${MAX_HEAD_BYTES} bytes`);
      text = joined.toString('latin1', 0, e);
      next = at + (e + 4 - this.partial.length);
      this.partial = undefined;
    }
    const h = parseHead(text);
    if (h.status >= 100 && h.status < 200) {
      if (h.status === 101) throw new ResponseParseError('the server switched protocols (101): not for a GET of a file');
      if (++this.interim > MAX_INTERIM) throw new ResponseParseError(`more than ${MAX_INTERIM} interim (1xx) answers before the response`);
      return next; // an interim answer: the real one follows
    }
    this.interim = 0;
    this.data = 0;
    this.framing = 0;
    this.ev.onHead(h);
    if (!hasBody(h.status)) this.finish();
    else if (h.chunked) this.state = 'chunk-size';
    else if (h.contentLength !== undefined) {
      this.left = h.contentLength;
      if (this.left === 0) this.finish();
      else this.state = 'fixed';
    } else this.state = 'close';
    return next;
  }

  /** One CRLF-terminated line of the chunked framing (size, the CRLF after data, trailers). */
  private line(buf: Buffer, at: number, end: number): number {
    const nl = (end === buf.length ? buf : buf.subarray(0, end)).indexOf(10, at); // '\n'
    this.framing += (nl < 0 ? end : nl + 1) - at;
    if (this.framing > this.data + MAX_FRAMING_BYTES) throw new ResponseParseError(`chunked framing (chunk sizes, trailers) of more than ${MAX_FRAMING_BYTES} bytes beyond its data`);
    if (nl < 0) {
      this.partial = this.partial ? Buffer.concat([this.partial, buf.subarray(at, end)]) : Buffer.from(buf.subarray(at, end));
      if (this.partial.length > 4096) throw new ResponseParseError('a chunked-encoding line longer than 4096 bytes');
      return end;
    }
    let text = buf.toString('latin1', at, nl);
    if (this.partial) {
      text = this.partial.toString('latin1', 0, this.partial.length) + text;
      this.partial = undefined;
    }
    if (!text.endsWith('\r')) throw new ResponseParseError('a chunked-encoding line without CRLF');
    text = text.slice(0, -1);
    if (this.state === 'chunk-crlf') {
      if (text !== '') throw new ResponseParseError('chunk data longer than its declared size');
      this.state = 'chunk-size';
    } else if (this.state === 'chunk-size') {
      const m = /^([0-9a-fA-F]{1,12})[ \t]*(?:;.*)?$/.exec(text);
      if (!m) throw new ResponseParseError(`bad chunk size line: '${text.slice(0, 40)}'`);
      this.left = parseInt(m[1]!, 16);
      this.state = this.left === 0 ? 'trailers' : 'chunk-data';
    } else if (text === '') this.finish(); // trailers end with an empty line
    return nl + 1;
  }
}
