// The release artifacts, built once per `npm test`: `npm run package` takes
// minutes (the .deb and the single executable), so a test file reuses them
// when they are newer than the bundles they were made from.

import { execFileSync } from 'node:child_process';
import { existsSync, readFileSync, statSync } from 'node:fs';
import { join } from 'node:path';
import { REPO } from './cli.ts';

export const VERSION = (JSON.parse(readFileSync(join(REPO, 'package.json'), 'utf8')) as { version: string }).version;
export const DEB = join(REPO, `dist/hfk_${VERSION}_amd64.deb`);
export const SEA = join(REPO, 'dist/hfk');

/** Runs `npm run package` unless the .deb and dist/hfk are newer than dist/hfk-cli.mjs. */
export function ensurePackage(): { deb: string; sea: string } {
  const bundle = join(REPO, 'dist/hfk-cli.mjs');
  const fresh = (p: string) => existsSync(p) && existsSync(bundle) && statSync(p).mtimeMs >= statSync(bundle).mtimeMs;
  if (!fresh(DEB) || !fresh(SEA)) execFileSync('npm', ['run', 'package'], { cwd: REPO, stdio: 'ignore', timeout: 900_000 });
  return { deb: DEB, sea: SEA };
}
