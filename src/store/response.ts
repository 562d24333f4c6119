// How an HTTP answer for a store file is judged, for both HTTP clients
// (h1.ts and http.ts): by status, by declared size and by the bytes that
// came, each failure of the kind that tells the caller what to do next.

import { BrokenError, InvalidError, MissingError, type SourceError } from '../errors.ts';

/** Largest body given its buffer before it arrives when no expected size says how large it must be. */
export const PREALLOCATE_MAX = 4 << 20;

/** The most bytes a read takes when it gives no size or limit of its own. */
export const READ_MAX_BYTES = 64 * 1024 * 1024;

/** The most bytes of an answer read only to be dropped (an error page, a redirect, a cancelled request's); more closes the connection. */
export const DROP_MAX = 64 * 1024;

/**
 * 404/410: the store lacks the file; 403 too: an object store (S3, GCS)
 * answers it for a missing key when listing is denied. Any other status but
 * 200 (and the redirects, see redirectTarget): a transport failure.
 */
export function statusError(origin: string, url: string, status: number): SourceError | undefined {
  if (status === 404 || status === 410) return new MissingError(origin, `${url}: HTTP ${status}`);
  if (status === 403) return new MissingError(origin, `${url}: HTTP 403 (forbidden: how an object store answers for a missing key)`);
  if (status === 401) return new BrokenError(origin, `${url}: HTTP 401 (the mirror wants a login)`, { hint: 'give it in the mirror URL (http://USER:PASS@host/…) or in a netrc file (~/.netrc, or netrc: in hfk.yaml)' });
  if (status === 407) return new BrokenError(origin, `${url}: HTTP 407 (the proxy wants a login)`, { hint: 'give it in the proxy URL: http://USER:PASS@proxy:PORT/' });
  if (status !== 200) return new BrokenError(origin, `${url}: HTTP ${status}`);
  return undefined;
}

/** Redirects followed on one read. */
export const MAX_REDIRECTS = 5;

/** Statuses that send a GET elsewhere (300 and 305 are not followed). */
export function isRedirect(status: number): boolean {
  return status === 301 || status === 302 || status === 303 || status === 307 || status === 308;
}

/** A redirect answer, passed from one hop of a read to the next (never seen outside the clients). */
export class Redirected extends Error {
  readonly status: number;
  readonly location: string | undefined;
  constructor(status: number, location: string | undefined) {
    super(`HTTP ${status}`);
    this.status = status;
    this.location = location;
  }
}

/**
 * Where a redirect leads: its Location resolved against the URL that was
 * asked, http or https, never from https down to http, at most MAX_REDIRECTS
 * hops without a loop. `chain`: the URLs asked so far, the first one first.
 * Anything else is a BrokenError naming the mirror.
 */
export function redirectTarget(origin: string, chain: readonly string[], r: Redirected): URL | SourceError {
  const from = chain[chain.length - 1]!;
  const first = chain[0]!;
  if (!r.location) return new BrokenError(origin, `${from}: HTTP ${r.status} without a Location to follow`);
  let to: URL;
  try {
    to = new URL(r.location, from);
  } catch {
    return new BrokenError(origin, `${from}: HTTP ${r.status} to '${r.location.slice(0, 200)}', which is not a URL`);
  }
  to.hash = '';
  // Credentials in a Location are neither used nor shown.
  to.username = '';
  to.password = '';
  if (to.protocol !== 'http:' && to.protocol !== 'https:') return new BrokenError(origin, `${from}: redirected to ${to.protocol} URL ${to.href.slice(0, 200)}: only http and https are followed`);
  if (to.protocol === 'http:' && new URL(from).protocol === 'https:') {
    return new BrokenError(origin, `${from}: redirected from https down to plain http (${to.href.slice(0, 200)}): refused`, { hint: 'give the mirror by the URL it redirects to, if it is to be trusted over plain http' });
  }
  if (chain.includes(to.href)) return new BrokenError(origin, `${first}: redirects in a loop (${[...chain, to.href].join(' → ')})`);
  if (chain.length > MAX_REDIRECTS) return new BrokenError(origin, `${first}: more than ${MAX_REDIRECTS} redirects (last to ${to.href.slice(0, 200)})`);
  return to;
}

/** A declared length other than the one the manifest gives (a wrong object), or over the file's limit. */
export function declaredSizeError(origin: string, url: string, declared: number | undefined, expected: number | undefined, max?: number): SourceError | undefined {
  if (declared === undefined) return undefined;
  if (expected !== undefined && declared !== expected) return new InvalidError(origin, `${url}: ${declared} bytes, the manifest says ${expected}`);
  if (max !== undefined && declared > max) return tooLarge(origin, url, `${declared} bytes`, max);
  return undefined;
}

function tooLarge(origin: string, url: string, what: string, max: number): SourceError {
  return new InvalidError(origin, `${url}: ${what}, more than such a file may have (${max} bytes)`);
}

/** More bytes than the manifest or the file's limit allows, as soon as they arrive. */
export function overrunError(origin: string, url: string, received: number, expected: number | undefined, max?: number): SourceError | undefined {
  if (expected !== undefined && received > expected) return new InvalidError(origin, `${url}: more than ${expected} bytes, the manifest says ${expected}`);
  if (max !== undefined && received > max) return tooLarge(origin, url, `more than ${max} bytes`, max);
  return undefined;
}

/** At the end of the body: cut short against its declared length (transport), or not the manifest's size (wrong object). */
export function endError(origin: string, url: string, received: number, declared: number | undefined, expected: number | undefined): SourceError | undefined {
  if (declared !== undefined && declared !== received) return new BrokenError(origin, `${url}: response cut short: ${received} of ${declared} bytes`);
  if (expected !== undefined && received !== expected) return new InvalidError(origin, `${url}: ${received} bytes, the manifest says ${expected}`);
  return undefined;
}

/** Whether to give the body its buffer up front: its size is known and sane (a hostile length is never allocated). */
export function preallocate(declared: number | undefined, expected: number | undefined): declared is number {
  return declared !== undefined && Number.isSafeInteger(declared) && declared >= 0 && (declared === expected || declared <= PREALLOCATE_MAX);
}
