import { mkdirSync, writeFileSync } from 'node:fs';
import * as net from 'node:net';
import { join } from 'node:path';
import { describe, expect, it, onTestFinished } from 'vitest';
import { tempDir } from '../../test/helpers/tmp.ts';
import { requestPath, serveStore } from './serve.ts';

/** Sends one raw request (the target exactly as given) and returns the status code and body. */
function rawGet(url: string, target: string): Promise<{ status: number; body: string }> {
  const { hostname, port } = new URL(url);
  return new Promise((resolve, reject) => {
    const sock = net.connect(Number(port), hostname, () => sock.write(`GET ${target} HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n`));
    const chunks: Buffer[] = [];
    sock.on('data', (c: Buffer) => chunks.push(c));
    sock.on('error', reject);
    sock.on('close', () => {
      const text = Buffer.concat(chunks).toString('latin1');
      const m = /^HTTP\/1\.1 (\d{3})/.exec(text);
      if (!m) return reject(new Error(`no status line in ${JSON.stringify(text.slice(0, 80))}`));
      resolve({ status: Number(m[1]), body: text.slice(text.indexOf('\r\n\r\n') + 4) });
    });
  });
}

describe('hfk serve', () => {
  it('answers 400 to bad paths and keeps serving', { timeout: 20_000 }, async () => {
    const root = tempDir();
    mkdirSync(join(root, 'images', 'a'), { recursive: true });
    writeFileSync(join(root, 'images', 'a', 'latest.json'), '{"ok":1}');
    const logged: string[] = [];
    const s = await serveStore({ root, log: (l) => logged.push(l) });
    onTestFinished(() => s.close());
    for (const bad of ['/a%00', '/%', '/%zz', '/../../etc/passwd', '/images/%2e%2e/%2e%2e/x', '/images%2fa/latest.json', '/a%0a', '/a%5c..%5cb']) {
      expect((await rawGet(s.url, bad)).status, bad).toBe(400);
    }
    expect(await rawGet(s.url, '/images/a/latest.json')).toEqual({ status: 200, body: '{"ok":1}' });
    expect((await rawGet(s.url, '/images/a/missing')).status).toBe(404);
    expect((await rawGet(s.url, '/images/a/.hidden')).status).toBe(404);
    expect(logged.filter((l) => / 400 /.test(l))).toHaveLength(8);
  });

  it('maps request targets to store paths, refusing what is not a clean path', () => {
    const table: [string, string | undefined][] = [
      ['/images/a/latest.json', 'images/a/latest.json'],
      ['//blocks//ab/cd?x=1#y', 'blocks/ab/cd'],
      ['http://host:8080/images/a/v1.hfkm', 'images/a/v1.hfkm'],
      ['/a%20b', 'a b'],
      ['/', ''],
      ['*', undefined],
      ['/a%00', undefined],
      ['/%', undefined],
      ['/%zz', undefined],
      ['/a/../b', undefined],
      ['/a/./b', undefined],
      ['/%2E%2E/x', undefined],
      ['/a%2fb', undefined],
      ['/a%5cb', undefined],
      ['/a%7f', undefined],
    ];
    for (const [target, rel] of table) expect(requestPath(target), target).toBe(rel);
  });
});
