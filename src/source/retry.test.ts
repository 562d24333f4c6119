import { readFileSync, writeFileSync } from 'node:fs';
import * as http from 'node:http';
import type { AddressInfo } from 'node:net';
import { join } from 'node:path';
import { describe, expect, it, onTestFinished } from 'vitest';
import { hfk, hfkJson } from '../../test/helpers/cli.ts';
import { pseudoRandom } from '../../test/helpers/images.ts';
import { tempDir } from '../../test/helpers/tmp.ts';
import { BLOCKS_DIR } from '../format/layout.ts';

// `--soft` is a timer over the whole get: a mirror that serves the pointer
// and the manifest but never answers for a block must not hold the get past
// its soft deadline, even though each block request is stuck in flight.

/** Serves a store folder; requests for block objects are accepted and never answered. */
async function stuckBlocks(root: string): Promise<{ url: string; stuck: () => number }> {
  const held = new Set<http.ServerResponse>();
  let stuck = 0;
  const server = http.createServer((req, res) => {
    const rel = decodeURIComponent(new URL(req.url!, 'http://x').pathname).slice(1);
    if (rel.startsWith(`${BLOCKS_DIR}/`)) {
      stuck++;
      held.add(res);
      return;
    }
    try {
      const body = readFileSync(join(root, rel));
      res.writeHead(200, { 'content-length': body.length }).end(body);
    } catch {
      res.writeHead(404, { 'content-length': 0 }).end();
    }
  });
  await new Promise<void>((r) => server.listen(0, '127.0.0.1', r));
  onTestFinished(async () => {
    server.closeAllConnections();
    await new Promise((r) => server.close(r));
  });
  return { url: `http://127.0.0.1:${(server.address() as AddressInfo).port}/`, stuck: () => stuck };
}

describe('hfk get --soft', () => {
  it('ends at its soft deadline with a clear error while every block request is stuck', async () => {
    const dir = tempDir('hfk-soft-');
    await hfk(['keygen', '--out', join(dir, 'k')]);
    writeFileSync(join(dir, 'img'), pseudoRandom(256 * 1024, 7));
    await hfkJson(['publish', join(dir, 'img'), '--store', join(dir, 'store'), '--name', 't', '--key', join(dir, 'k.key'), '--block-size', '16K']);
    const m = await stuckBlocks(join(dir, 'store'));
    const t0 = performance.now();
    const r = await hfk(['get', 't', '--mirrors', m.url, '--key', join(dir, 'k.pub'), '--out', join(dir, 'out.img'), '--soft', '--soft-timeout', '2', '--quiet'], { timeoutMs: 60_000 });
    const seconds = (performance.now() - t0) / 1000;
    expect(r.code).not.toBe(0);
    expect(r.stderr).toMatch(/gave up after \d+ s/);
    expect(r.stderr).toContain('127.0.0.1');
    expect(m.stuck()).toBeGreaterThan(0);
    // Bounded by the soft deadline plus the ranking's own, far below the 20 s a stuck head alone would take.
    expect(seconds).toBeLessThan(45);
  }, 90_000);
});
