import { Codec, CODECS, DEFAULT_BLOCK_SIZE, DEFAULT_LEVEL } from '../../format/codec.ts';
import { InputError, UsageError } from '../../errors.ts';
import { loadPrivateKey } from '../../format/keys.ts';
import { BootProfile, ImageName } from '../../format/manifest.ts';
import { readFile } from 'node:fs/promises';
import { checkPublishOptions, publish, type PublishResult } from '../../publish/publish.ts';
import { LocalStore } from '../../store/local.ts';
import { formatBytes, formatDuration, parseSize } from '../../util/size.ts';
import { type Command, flag, printJson, required, str } from '../command.ts';
import { ProgressBar } from '../progress.ts';

export const publishCommand: Command = {
  name: 'publish',
  summary: 'Cut an image into compressed, content-addressed blocks and publish a signed version of it.',
  usage: 'IMAGE --store DIR --name NAME --key PREFIX.key [options]',
  description: `
IMAGE is a filesystem image file (squashfs, ext4, iso9660, erofs, …), a block
device, or a KNOPPIX cloop V2 file (detected by its header; its image is
published without an uncompressed copy). Publishing again writes only the
blocks the store lacks; the image's pointer moves to the new version last.
An image identical to the latest version (the same blocks, codec, profile and
key) makes no new version: nothing is written and the pointer stays.`,
  options: {
    store: { type: 'string', arg: 'DIR', description: 'store folder (created if missing)' },
    name: { type: 'string', arg: 'NAME', description: 'image name (letters, digits, . - _)' },
    key: { type: 'string', arg: 'PREFIX.key', description: 'private signing key from hfk keygen' },
    'block-size': { type: 'string', arg: 'SIZE', description: 'block size, a power of two from 4K to 1M', default: '64K' },
    codec: { type: 'string', arg: 'CODEC', description: `block compression: ${CODECS.join(', ')}`, default: 'zstd' },
    level: { type: 'string', arg: 'N', description: 'compression level (zstd 1-19, deflate 1-9, brotli 0-11)', default: `zstd ${DEFAULT_LEVEL.zstd}, deflate ${DEFAULT_LEVEL.deflate}, brotli ${DEFAULT_LEVEL.brotli}` },
    profile: { type: 'string', arg: 'FILE', description: 'boot profile to carry in the manifest: a reader\'s .hfk/stats.json saved after a boot (its "profile"), or a JSON list of [first block, count] runs' },
    json: { type: 'boolean', description: 'print the result as JSON' },
  },
  positionals: { min: 1, max: 1 },
  async run(ctx) {
    const image = ctx.positionals[0]!;
    const storeDir = required(ctx, 'store', 'the store folder to publish into');
    const name = required(ctx, 'name', 'the image name clients will ask for');
    if (!ImageName.safeParse(name).success) {
      throw new UsageError(`--name must be 1-64 letters, digits, '.', '-' or '_', starting with a letter or digit: got '${name}'`);
    }
    const keyFile = required(ctx, 'key', 'the private key (PREFIX.key from hfk keygen) that signs the manifest');
    const blockSize = parseSize(str(ctx, 'block-size') ?? String(DEFAULT_BLOCK_SIZE), '--block-size');
    const codecText = str(ctx, 'codec') ?? 'zstd';
    const codec = Codec.safeParse(codecText);
    if (!codec.success) throw new UsageError(`--codec must be one of ${CODECS.join(', ')}: got '${codecText}'`);
    const levelText = str(ctx, 'level');
    if (levelText !== undefined && !/^-?\d+$/.test(levelText)) throw new UsageError(`--level must be a whole number: got '${levelText}'`);
    const level = levelText === undefined ? undefined : Number(levelText); // its range depends on --codec: checkPublishOptions
    checkPublishOptions({ blockSize, codec: codec.data, level, name });
    const key = loadPrivateKey(keyFile);
    const profileFile = str(ctx, 'profile');
    const profile = profileFile ? await readProfile(profileFile) : undefined;
    const store = await LocalStore.openWritable(storeDir);
    const json = flag(ctx, 'json');
    const bar = new ProgressBar(ctx.io, { label: `publish ${name}`, total: 0, unit: 'bytes' });
    const r = await publish({
      image,
      store,
      name,
      key,
      blockSize,
      codec: codec.data,
      ...(level === undefined ? {} : { level }),
      ...(profile ? { profile } : {}),
      onProgress: (p) => bar.update(p.bytesDone, p.bytesTotal, p.phase === 'manifest' ? 'writing manifest' : ''),
    });
    bar.done();
    if (json) printJson(ctx.io, r);
    else ctx.io.out(publishSummary(r));
    return 0;
  },
};

export function publishSummary(r: PublishResult): string {
  const pct = (a: number, b: number) => (b ? `${((100 * a) / b).toFixed(1)}%` : '0%');
  if (r.unchanged) {
    // A repair is still a write: say which block objects the store lacked and got back.
    const repaired = r.blocks.new ? `; wrote ${r.blocks.new} of its block objects again (missing or damaged in the store)` : '';
    return `${r.name}: unchanged since v${r.version}; ${repaired ? 'no new version' : 'nothing written'}${repaired}\n`;
  }
  return [
    `published ${r.name} v${r.version}${r.previousVersion ? ` (after v${r.previousVersion})` : ''} → ${r.manifest}`,
    `  image     ${r.image.path} (${r.image.kind}, ${r.image.filesystem}), ${formatBytes(r.image.size)} in ${r.blocks.total} blocks of ${formatBytes(r.blockSize)}`,
    `  blocks    ${r.blocks.new} new, ${r.blocks.reused} reused from the store, ${r.blocks.total - r.blocks.zero - r.blocks.unique} repeated in the image, ${r.blocks.zero} all-zero (no object)`,
    `  written   ${formatBytes(r.bytes.written)} of block objects (${pct(r.blocks.new, r.blocks.unique)} of the unique blocks) + ${formatBytes(r.bytes.manifest)} manifest`,
    `  ratios    compression ${r.compressionRatio.toFixed(2)}× (${r.codec} level ${r.level}, new blocks), dedup ${r.dedupRatio.toFixed(2)}×; stored size of the image ${formatBytes(r.bytes.stored)}`,
    `  time      ${formatDuration(r.seconds * 1000)}, ${(r.bytes.image / r.seconds / 1e6).toFixed(0)} MB/s, ${(r.cpuSeconds / r.seconds).toFixed(2)} cores busy`,
    '',
  ].join('\n');
}

/** A boot profile from a file: a saved stats.json (its "profile") or the runs themselves. */
export async function readProfile(file: string): Promise<BootProfile> {
  let json: unknown;
  try {
    json = JSON.parse(await readFile(file, 'utf8'));
  } catch (e) {
    throw new InputError(`cannot read boot profile ${file}: ${(e as Error).message}`, {
      hint: 'save it from a booted machine: cp /run/hfk/img/.hfk/stats.json profile.json',
    });
  }
  const runs = json && typeof json === 'object' && !Array.isArray(json) && 'profile' in json ? (json as { profile: unknown }).profile : json;
  const r = BootProfile.safeParse(runs);
  if (!r.success) throw new InputError(`${file} holds no boot profile: expected a "profile" list of [first block, count] runs`);
  return r.data;
}
