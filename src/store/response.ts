// How an HTTP answer for a store file is judged, for both HTTP clients
// (h1.ts and http.ts): by status, by declared size and by the bytes that
// came, each failure of the kind that tells the caller what to do next.

import { BrokenError, InvalidError, MissingError, type SourceError } from '../errors.ts';

/** Largest body given its buffer before it arrives when no expected size says how large it must be. */
export const PREALLOCATE_MAX = 4 << 20;

/** 404/410: the store lacks the file; any other status but 200: a transport failure. */
export function statusError(origin: string, url: string, status: number): SourceError | undefined {
  if (status === 404 || status === 410) return new MissingError(origin, `${url}: HTTP ${status}`);
  if (status !== 200) return new BrokenError(origin, `${url}: HTTP ${status}`);
  return undefined;
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
