// The store operations through the built CLI: hfk list of a folder and of a
// served store, hfk promote, and hfk publish of an unchanged image.

import { rmSync, writeFileSync } from 'node:fs';
import { join } from 'node:path';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { imageBytes } from '../../src/publish/testing/stores.ts';
import { hfk, hfkJson, hfkSpawn, waitForLine } from '../helpers/cli.ts';
import { tempDirKeep } from '../helpers/tmp.ts';

let work: string;
let key: string;
let pub: string;
let store: string;

beforeAll(async () => {
  work = tempDirKeep('hfk-storeops-');
  expect((await hfk(['keygen', '--out', join(work, 'k')])).code).toBe(0);
  key = join(work, 'k.key');
  pub = join(work, 'k.pub');
  store = join(work, 'store');
  for (const [file, seeds] of [['a.img', [1, 2, 3]], ['b.img', [1, 2, 4]]] as const) {
    writeFileSync(join(work, file), imageBytes(seeds));
    await hfkJson(['publish', join(work, file), '--store', store, '--name', 'os', '--key', key, '--block-size', '4K']);
  }
});
afterAll(() => rmSync(work, { recursive: true, force: true }));

describe('hfk publish, list and promote from the command line', () => {
  it('publish of the latest image again says so and writes nothing', async () => {
    writeFileSync(join(work, 'again.img'), imageBytes([1, 2, 4]));
    const args = ['publish', join(work, 'again.img'), '--store', store, '--name', 'os', '--key', key, '--block-size', '4K'];
    const r = await hfk(args);
    expect(r.code, r.stderr).toBe(0);
    expect(r.stdout).toBe('os: unchanged since v2; nothing written\n');
    expect(await hfkJson(args)).toMatchObject({ unchanged: true, version: 2, manifest: 'images/os/v2.hfkm' });
  });

  it('list shows the versions, the pointer and verified signatures of a folder', async () => {
    const r = await hfk(['list', store, '--key', pub]);
    expect(r.code, r.stderr).toBe(0);
    expect(r.stdout).toMatch(/^store .*store: 1 image, signatures checked with key [0-9a-f]{16}\n\nos: pointer → v2, 2 versions listed\n/);
    expect(r.stdout).toMatch(/\n {2}→ {2}v2 .* 12\.0 KiB .*3 × 4\.00 KiB zstd .* v1 +verified\n/);
    expect(r.stdout).toMatch(/\n {5}v1 .* - +verified\n$/);
    const help = await hfk(['list', '--help']);
    expect(help.stdout).toMatch(/^Usage: hfk list STORE\|URL/);
    const none = await hfk(['list', join(work, 'nowhere')]);
    expect(none.code).toBe(1);
    expect(none.stderr).toContain(`store ${join(work, 'nowhere')} does not exist`);
  });

  it('promote makes v3 with the content of v1, and list over HTTP shows the chain', async () => {
    const noVersion = await hfk(['promote', 'os', '--store', store, '--key', key]);
    expect(noVersion.code).toBe(2);
    expect(noVersion.stderr).toContain('give the version to promote: os@VERSION');
    const r = await hfk(['promote', 'os@1', '--store', store, '--key', key]);
    expect(r.code, r.stderr).toBe(0);
    expect(r.stdout).toBe('promoted os v1 as v3 (after v2) → images/os/v3.hfkm\n');
    const wrongKey = await hfk(['promote', 'os@2', '--store', store, '--key', pub]);
    expect(wrongKey.code).toBe(1);
    expect(wrongKey.stderr).toMatch(/is not a private key/);

    const srv = hfkSpawn(['serve', '--store', store, '--port', '0', '--quiet']);
    try {
      const [, url] = await waitForLine(srv, /serving .* at (http:\/\/\S+)/);
      const l = await hfkJson(['list', url!, '--name', 'os', '--key', pub]);
      expect(l.ok).toBe(true);
      expect(l.images[0].pointer).toBe(3);
      expect(l.images[0].versions.map((v: { version: number; verified: boolean }) => [v.version, v.verified])).toEqual([[3, true], [2, true], [1, true]]);
      const noName = await hfk(['list', url!]);
      expect(noName.code).toBe(2);
      expect(noName.stderr).toContain('give --name NAME');
    } finally {
      if (srv.exitCode === null) await new Promise((done) => srv.once('exit', done).kill('SIGTERM'));
    }
  });
});
