// hfk serve: a small static HTTP server for a store folder, with the same
// caching headers as config/nginx-hfk.conf (objects and manifests are
// immutable; the pointer is revalidated).

import * as fs from 'node:fs';
import * as http from 'node:http';
import type { AddressInfo } from 'node:net';
import * as path from 'node:path';
import { POINTER_FILE } from '../format/layout.ts';

export const IMMUTABLE_CACHE = 'public, max-age=31536000, immutable';
export const POINTER_CACHE = 'public, max-age=5, must-revalidate';

export interface ServeOptions {
  root: string;
  host?: string;
  port?: number;
  log?: (line: string) => void;
}

export interface StoreServer {
  url: string;
  server: http.Server;
  close(): Promise<void>;
}

export function cacheControlFor(rel: string): string {
  return path.posix.basename(rel) === POINTER_FILE ? POINTER_CACHE : IMMUTABLE_CACHE;
}

/**
 * The store path a request target names, or undefined for a bad one: not
 * a path, malformed percent-encoding, or a segment that decodes to `.`,
 * `..`, or holds a slash, backslash, NUL or other control character.
 * Segments are checked before any normalisation (which would hide a `..`).
 */
export function requestPath(target: string): string | undefined {
  const raw = target.replace(/^[a-z][a-z0-9+.-]*:\/\/[^/?#]*/i, '').replace(/[?#].*$/s, '');
  if (!raw.startsWith('/')) return undefined;
  const segments: string[] = [];
  for (const s of raw.split('/')) {
    if (s === '') continue;
    let d: string;
    try {
      d = decodeURIComponent(s);
    } catch {
      return undefined;
    }
    if (d === '.' || d === '..' || /[\x00-\x1f\x7f/\\]/.test(d)) return undefined;
    segments.push(d);
  }
  return segments.join('/');
}

export async function serveStore(o: ServeOptions): Promise<StoreServer> {
  const root = path.resolve(o.root);
  const handle = (req: http.IncomingMessage, res: http.ServerResponse): void => {
    const done = (status: number, size = 0) => o.log?.(`${req.method} ${req.url} ${status} ${size}`);
    if (req.method !== 'GET' && req.method !== 'HEAD') {
      res.writeHead(405, { allow: 'GET, HEAD' }).end();
      return done(405);
    }
    const rel = requestPath(req.url ?? '/');
    if (rel === undefined) {
      res.writeHead(400, { 'content-type': 'text/plain' }).end('bad path\n');
      return done(400);
    }
    const file = path.resolve(root, rel);
    if (!file.startsWith(root + path.sep) || rel.split('/').some((p) => p.startsWith('.'))) {
      res.writeHead(404).end();
      return done(404);
    }
    fs.stat(file, (err, st) => {
      if (err || !st.isFile()) {
        res.writeHead(404, { 'content-type': 'text/plain' }).end('not found\n');
        return done(404);
      }
      const etag = `"${st.size.toString(16)}-${Math.floor(st.mtimeMs).toString(16)}"`;
      const headers = {
        'content-length': String(st.size),
        'content-type': rel.endsWith('.json') ? 'application/json' : 'application/octet-stream',
        'cache-control': cacheControlFor(rel),
        'last-modified': st.mtime.toUTCString(),
        etag,
      };
      if (req.headers['if-none-match'] === etag) {
        res.writeHead(304, { etag, 'cache-control': headers['cache-control'] }).end();
        return done(304);
      }
      res.writeHead(200, headers);
      if (req.method === 'HEAD') {
        res.end();
        return done(200);
      }
      const stream = fs.createReadStream(file);
      stream.on('error', () => res.destroy());
      stream.pipe(res);
      res.on('finish', () => done(200, st.size));
    });
  };
  // One request that throws must not take the server down with it.
  const server = http.createServer((req, res) => {
    try {
      handle(req, res);
    } catch {
      if (res.headersSent) res.destroy();
      else res.writeHead(500).end();
      o.log?.(`${req.method} ${req.url} 500 0`);
    }
  });
  server.keepAliveTimeout = 30_000;
  await new Promise<void>((resolve, reject) => {
    server.once('error', reject);
    server.listen(o.port ?? 0, o.host ?? '127.0.0.1', () => resolve());
  });
  const addr = server.address() as AddressInfo;
  const host = addr.family === 'IPv6' ? `[${addr.address}]` : addr.address;
  return {
    url: `http://${host}:${addr.port}/`,
    server,
    close: () =>
      new Promise<void>((resolve) => {
        server.close(() => resolve());
        server.closeAllConnections();
      }),
  };
}
