// Which manifest to trust: signed by the pinned key, not older than the
// newest this machine has seen for the image (rollback protection), fetched
// from whichever mirror can provide it; and, when no mirror is reachable,
// the newest verified manifest the disk cache kept.

import * as fs from 'node:fs/promises';
import * as path from 'node:path';
import { z } from 'zod';
import { AbortedError, BrokenError, errnoCode, HfkError, MissingError, RollbackError, SignatureError } from '../errors.ts';
import type { PublicKey } from '../format/keys.ts';
import { decodeManifest, ImageName, type Manifest, manifestDigest, Sha256Hex } from '../format/manifest.ts';
import { readManifest } from '../store/images.ts';
import { writeFileAtomic } from '../util/atomic.ts';
import type { DiskCache } from '../source/diskcache.ts';
import type { Mirror } from '../source/mirror.ts';

const TrustFile = z.strictObject({
  format: z.literal('hfk-trust/1'),
  images: z.record(
    ImageName,
    z.strictObject({ keyId: z.string(), version: z.number().int().positive(), sha256: Sha256Hex, seenAt: z.string() }),
  ),
});
type TrustFile = z.infer<typeof TrustFile>;

/**
 * The newest version seen per image and key, kept in a small JSON file (or
 * only in memory). A missing file is a first use; a damaged one is refused
 * (E_TRUST_STATE), never reset: starting afresh would accept any old version.
 */
export class TrustState {
  private data: TrustFile;
  private readonly file: string | undefined;

  private constructor(file: string | undefined, data: TrustFile) {
    this.file = file;
    this.data = data;
  }

  static memory(): TrustState {
    return new TrustState(undefined, { format: 'hfk-trust/1', images: {} });
  }

  static async open(file: string): Promise<TrustState> {
    let text: string;
    try {
      text = await fs.readFile(file, 'utf8');
    } catch (e) {
      if (errnoCode(e) === 'ENOENT') return new TrustState(file, { format: 'hfk-trust/1', images: {} });
      throw damagedState(file, `cannot be read (${(e as Error).message})`, e);
    }
    let json: unknown;
    try {
      json = JSON.parse(text);
    } catch (e) {
      throw damagedState(file, text.length === 0 ? 'is empty' : `is not JSON (${(e as Error).message})`, e);
    }
    const parsed = TrustFile.safeParse(json);
    if (!parsed.success) throw damagedState(file, `is not an hfk trust state: ${z.prettifyError(parsed.error).replace(/\n/g, '; ')}`);
    return new TrustState(file, parsed.data);
  }

  seen(name: string, keyId: string): number {
    const e = this.data.images[name];
    return e && e.keyId === keyId ? e.version : 0;
  }

  async record(name: string, keyId: string, version: number, sha256: string): Promise<void> {
    if (this.seen(name, keyId) >= version) return;
    this.data.images[name] = { keyId, version, sha256, seenAt: new Date().toISOString() };
    if (!this.file) return;
    try {
      await fs.mkdir(path.dirname(this.file), { recursive: true });
      await writeFileAtomic(this.file, `${JSON.stringify(this.data, null, 1)}\n`, { fsync: true });
    } catch {
      // a state that cannot be written protects this run only
    }
  }
}

function damagedState(file: string, why: string, cause?: unknown): HfkError {
  return new HfkError('E_TRUST_STATE', `the rollback protection state ${file} ${why}: refusing to start without it, as any older version would then be accepted`, {
    hint: `check the disk it is on and restore the file from a backup; or, to start rollback protection afresh on purpose (the next version seen becomes the oldest accepted), remove it: rm -- '${file}'`,
    ...(cause !== undefined ? { cause } : {}),
  });
}

export interface LoadImageOptions {
  name: string;
  /** A pinned version (NAME@V); undefined follows the pointer. */
  version: number | undefined;
  key: PublicKey;
  /** Mirrors to ask, best first. */
  mirrors: readonly Mirror[];
  trust: TrustState;
  cache?: DiskCache | undefined;
  log?: (line: string) => void;
  signal?: AbortSignal;
  /** Manifests fetched already (the mirror ranking's, RankOptions.manifests): not fetched again when a pointer names them. */
  known?: ReadonlyMap<string, Buffer>;
}

export interface LoadedImage {
  manifest: Manifest;
  digest: string;
  /** The manifest file as received (signed bytes). */
  raw: Buffer;
  bytes: number;
  /** The mirror the manifest came from, or 'cache' when offline. */
  from: string;
  offline: boolean;
}

/**
 * Finds the manifest to use. Tries the mirrors in order; a mirror that is
 * stale (offers an older version than seen) or serves a bad manifest is
 * skipped. Typed errors: RollbackError when every answer is too old,
 * SignatureError when every answer is signed wrongly, MissingError when no
 * mirror has the image, BrokenError when none could be reached and the
 * cache has nothing either.
 */
export async function loadImage(o: LoadImageOptions): Promise<LoadedImage> {
  const seen = o.trust.seen(o.name, o.key.id);
  const failures: HfkError[] = [];
  for (const m of o.mirrors) {
    if (o.signal?.aborted) {
      failures.push(new AbortedError(`${m.url}: not asked, the time to open ${o.name} ran out`));
      continue;
    }
    try {
      const loaded = await readManifest(m, o.name, o.version, o.key, o.signal ? { signal: o.signal } : {}, o.known);
      const v = loaded.manifest.header.version;
      if (o.version === undefined && v < seen) {
        failures.push(
          new RollbackError(`${m.url} offers ${o.name} v${v}, but this machine has already seen v${seen}: refusing to go back`, {
            hint: 'the mirror is stale or replays an old version; it will be skipped (update the mirror, or boot NAME@VERSION to pin a version on purpose)',
          }),
        );
        continue;
      }
      await o.trust.record(o.name, o.key.id, v, loaded.digest);
      await o.cache?.putManifest(o.name, v, loaded.bytes);
      return { manifest: loaded.manifest, digest: loaded.digest, raw: loaded.bytes, bytes: loaded.bytes.length, from: m.url, offline: false };
    } catch (e) {
      if (!(e instanceof HfkError)) throw e;
      if (e.code === 'E_INVALID') m.book(e);
      failures.push(e);
      // The last mirror's failure is in the error thrown below (with every other's): said once.
      if (m !== o.mirrors.at(-1)) o.log?.(`manifest from ${m.url}: ${e.message}; trying the next mirror`);
    }
  }
  // No mirror gave a usable manifest. Offline: fall back to the cache, but
  // only if no mirror answered at all (a mirror that answered wrongly is not "offline").
  const unreachable = failures.every((e) => e instanceof BrokenError || e.code === 'E_ABORTED');
  if (o.cache && unreachable) {
    for (const c of await o.cache.manifests(o.name)) {
      if (o.version !== undefined && c.version !== o.version) continue;
      try {
        const manifest = decodeManifest(c.bytes, o.key, `cached manifest ${o.name} v${c.version}`);
        if (o.version === undefined && c.version < seen) continue;
        o.log?.(`no mirror reachable: using ${o.name} v${c.version} from the disk cache`);
        return { manifest, digest: manifestDigest(c.bytes), raw: c.bytes, bytes: c.bytes.length, from: 'cache', offline: true };
      } catch {
        // a damaged cached manifest: try an older one
      }
    }
  }
  // Out of time (the caller's deadline, e.g. --soft): its reason says which, with what each mirror did.
  if (o.signal?.aborted && o.signal.reason instanceof HfkError) {
    const r = o.signal.reason;
    throw new HfkError(r.code, `${r.message}: ${failures.map((e) => e.message).join('; ')}`, r.hint ? { hint: r.hint } : {});
  }
  throw summarize(o.name, o.mirrors.length, failures);
}

function summarize(name: string, count: number, failures: HfkError[]): HfkError {
  const detail = failures.map((e) => e.message).join('; ');
  const all = (code: string) => failures.length > 0 && failures.every((e) => e.code === code);
  if (count === 0) return new MissingError('(none)', `no mirrors to load ${name} from`, { hint: 'give mirrors: --mirrors URL,… or hfk.mirrors=' });
  if (all('E_ROLLBACK')) return failures[0]!;
  if (all('E_SIGNATURE')) {
    return new SignatureError(`every mirror's manifest for ${name} fails verification: ${detail}`, {
      hint: 'check that the pinned public key (--key / hfk.key=) is the publisher\'s PREFIX.pub',
    });
  }
  if (all('E_MISSING')) {
    // The image is there, only not that version: say so (its hint names the command that lists versions).
    if (failures.every((e) => e instanceof MissingError && e.absent === 'version')) {
      return new MissingError('(all mirrors)', `no mirror has the manifest for '${name}': ${detail}`, failures[0]!.hint ? { hint: failures[0]!.hint } : {});
    }
    return new MissingError('(all mirrors)', `no mirror has image '${name}': ${detail}`, {
      hint: 'check the image name (NAME, --name or hfk.image=) and that the mirrors carry this store',
    });
  }
  if (failures.every((e) => e instanceof BrokenError)) {
    return new BrokenError('(all mirrors)', `no mirror could be reached for ${name}: ${detail}`, {
      hint: 'check the network and the mirror URLs; a disk cache (--cache / hfk.cache=) lets a machine start without the network',
    });
  }
  const first = failures.find((e) => e.code === 'E_ROLLBACK' || e.code === 'E_SIGNATURE') ?? failures[0]!;
  return new HfkError(first.code, `cannot load ${name}: ${detail}`, first.hint ? { hint: first.hint } : {});
}
