import { createServer, type Server } from 'node:http';
import type { AddressInfo } from 'node:net';
import { writeFileSync } from 'node:fs';
import { join } from 'node:path';
import { afterEach, describe, expect, it } from 'vitest';
import { tempDir } from '../../test/helpers/tmp.ts';
import { InputError } from '../errors.ts';
import { MIRROR_LIST_MAX_BYTES, readMirrorList } from './mirrorlist.ts';

const servers: Server[] = [];
afterEach(async () => {
  for (const s of servers.splice(0)) {
    s.closeAllConnections();
    await new Promise((r) => s.close(r));
  }
});

/** A loopback server answering every request with `handler`; resolves to its base URL. */
async function serve(handler: Parameters<typeof createServer>[1]): Promise<string> {
  const s = createServer(handler);
  servers.push(s);
  await new Promise<void>((r) => s.listen(0, '127.0.0.1', r));
  return `http://127.0.0.1:${(s.address() as AddressInfo).port}/`;
}

describe('readMirrorList: every byte from the network or disk bounded in size and time', () => {
  it('reads a list over HTTP and from a file', async () => {
    const base = await serve((_q, res) => res.end('# mirrors\nhttp://a.example/hfk\nhttp://b.example/hfk/\n'));
    expect(await readMirrorList(`${base}list.txt`)).toEqual(['http://a.example/hfk/', 'http://b.example/hfk/']);
    const file = join(tempDir('hfk-ml-'), 'list.txt');
    writeFileSync(file, 'http://c.example/\n');
    expect(await readMirrorList(file)).toEqual(['http://c.example/']);
  });

  it('a list URL may carry a query, and the server gets it', async () => {
    const asked: string[] = [];
    const base = await serve((q, res) => {
      asked.push(q.url ?? '');
      res.end('http://a.example/\n');
    });
    expect(await readMirrorList(`${base}lists/mirrors.txt?site=lab&v=2`)).toEqual(['http://a.example/']);
    expect(asked).toEqual(['/lists/mirrors.txt?site=lab&v=2']);
  });

  it('an endless body is cut off at the limit, not buffered', async () => {
    let sent = 0;
    const base = await serve((_q, res) => {
      const line = Buffer.from('http://mirror.example/hfk/\n'.repeat(1000));
      const pump = () => {
        while (sent < 64 * MIRROR_LIST_MAX_BYTES && res.write(line)) sent += line.length;
        if (!res.destroyed && sent < 64 * MIRROR_LIST_MAX_BYTES) res.once('drain', pump);
      };
      pump();
    });
    const e = await readMirrorList(`${base}list.txt`).catch((x: unknown) => x);
    expect(e).toBeInstanceOf(InputError);
    expect((e as Error).message).toMatch(/more than such a file may have \(1048576 bytes\)/);
    expect(sent).toBeLessThan(32 * MIRROR_LIST_MAX_BYTES);
  });

  it('a declared length over the limit is refused before the body', async () => {
    const base = await serve((_q, res) => {
      res.writeHead(200, { 'content-length': String(10 * MIRROR_LIST_MAX_BYTES) });
      res.write('http://a.example/\n');
    });
    await expect(readMirrorList(`${base}list.txt`)).rejects.toThrow(/10485760 bytes, more than such a file may have/);
  });

  it('a body trickled a byte at a time does not outlast the deadline', async () => {
    const base = await serve((_q, res) => {
      res.writeHead(200, { 'content-length': '100000' });
      const t = setInterval(() => res.write('h'), 20);
      res.on('close', () => clearInterval(t));
    });
    await expect(readMirrorList(`${base}list.txt`, { timeoutMs: 300 })).rejects.toThrow(/no whole answer within 0.3 s/);
  });

  it('a file over the limit is refused without reading it', async () => {
    const file = join(tempDir('hfk-ml-'), 'big.txt');
    writeFileSync(file, Buffer.alloc(MIRROR_LIST_MAX_BYTES + 1, 0x61));
    await expect(readMirrorList(file)).rejects.toThrow(/has 1048577 bytes, more than such a file may have/);
  });
});
