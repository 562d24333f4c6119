// Small stores for the publisher's tests: images of seeded bytes published
// with the real publisher, and a snapshot of every file (to prove a command
// wrote nothing).

import { readdirSync, statSync, writeFileSync } from 'node:fs';
import { join, relative } from 'node:path';
import type { PrivateKey } from '../../format/keys.ts';
import type { BootProfile } from '../../format/manifest.ts';
import { LocalStore } from '../../store/local.ts';
import { publish, type PublishResult } from '../publish.ts';

export const BLOCK = 4096;

/** One block per seed: the same seed gives the same block in every image; seed 0 an all-zero one. */
export function imageBytes(seeds: readonly number[]): Buffer {
  return Buffer.concat(
    seeds.map((s) => {
      const b = Buffer.alloc(BLOCK);
      if (s === 0) return b;
      let x = Math.imul(s, 2654435761) >>> 0 || 1;
      for (let i = 0; i < BLOCK; i++) {
        x ^= x << 13;
        x ^= x >>> 17;
        x ^= x << 5;
        b[i] = x & 0xff;
      }
      return b;
    }),
  );
}

/** Writes `bytes` to `file` and publishes it as `name` into the store folder `dir`. */
export async function publishBytes(
  dir: string,
  name: string,
  key: PrivateKey,
  file: string,
  bytes: Buffer,
  extra: { profile?: BootProfile } = {},
): Promise<PublishResult> {
  writeFileSync(file, bytes);
  const store = await LocalStore.openWritable(dir);
  return publish({ image: file, store, name, key, blockSize: BLOCK, codec: 'zstd', workers: 1, ...extra });
}

/** Every regular file under `dir`: its path, size and modification time. */
export function snapshot(dir: string): Map<string, string> {
  const out = new Map<string, string>();
  const walk = (d: string) => {
    for (const e of readdirSync(d, { withFileTypes: true })) {
      const p = join(d, e.name);
      if (e.isDirectory()) walk(p);
      else {
        const st = statSync(p);
        out.set(relative(dir, p), `${st.size} ${st.mtimeMs}`);
      }
    }
  };
  walk(dir);
  return out;
}
