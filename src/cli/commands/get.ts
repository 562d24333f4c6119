import { randomBytes } from 'node:crypto';
import * as fs from 'node:fs/promises';
import * as path from 'node:path';
import { UsageError } from '../../errors.ts';
import { resolvePublicKey } from '../../format/keys.ts';
import { parseImageRef } from '../../format/manifest.ts';
import { openImage } from '../../fetch/open.ts';
import { formatRanking } from '../../fetch/rank.ts';
import { removeOnInterrupt } from '../../util/interrupt.ts';
import { formatBytes, parseSize } from '../../util/size.ts';
import { type Command, flag, int, noteNewFolder, printJson, required, str } from '../command.ts';
import { MIRROR_OPTIONS, mirrorSources } from '../mirrorargs.ts';
import { ProgressBar } from '../progress.ts';

/** Checks --out before anything is fetched: its folder must exist, and it must not be a folder itself. */
async function checkOut(out: string, name: string): Promise<void> {
  const dir = path.dirname(path.resolve(out));
  if (!(await fs.stat(dir).catch(() => undefined))?.isDirectory()) {
    throw new UsageError(`--out ${out}: folder ${dir} does not exist`, { hint: 'create it first (mkdir -p), or choose another --out' });
  }
  if ((await fs.stat(out).catch(() => undefined))?.isDirectory()) {
    throw new UsageError(`--out ${out} is a folder: give the file to write`, { hint: `e.g. --out ${path.join(out, `${name}.img`)}` });
  }
}

export const getCommand: Command = {
  name: 'get',
  summary: 'Fetch a whole image from the mirrors (ranked, verified, with failover) into a file.',
  usage: 'NAME[@VERSION] --mirrors URL,… --key PREFIX.pub [--out FILE] [options]',
  description: `
Reads the image through the same fetcher hfk mount and hfk-init use: mirrors
ranked by measurement, every block verified, failover and hedging, caches.
The file appears under its name only when complete.`,
  options: {
    name: { type: 'string', arg: 'NAME[@VERSION]', description: 'the image, as hfk mount and hfk mirrors rank take it (instead of the NAME argument)' },
    ...MIRROR_OPTIONS,
    key: { type: 'string', arg: 'PREFIX.pub', description: 'public key the manifest must be signed with' },
    out: { type: 'string', arg: 'FILE', description: 'where to write the image', default: 'NAME.img' },
    cache: { type: 'string', arg: 'DIR', description: 'disk cache folder, made if missing (blocks are kept for next time)' },
    'cache-size': { type: 'string', arg: 'SIZE', description: 'disk cache limit', default: '4G' },
    soft: { type: 'boolean', description: 'give up when every mirror fails for --soft-timeout (default: retry forever)' },
    'soft-timeout': { type: 'string', arg: 'SECONDS', description: 'how long soft mode keeps trying', default: '30' },
    quiet: { type: 'boolean', description: 'do not print the mirror ranking' },
    json: { type: 'boolean', description: 'print the result as JSON' },
  },
  positionals: { min: 0, max: 1 },
  async run(ctx) {
    const named = str(ctx, 'name');
    const given = ctx.positionals[0];
    if (named !== undefined && given !== undefined) throw new UsageError(`the image is given twice ('${given}' and --name ${named}): give it once`);
    if (named === undefined && given === undefined) {
      throw new UsageError('which image? give NAME[@VERSION] (or --name NAME[@VERSION])', { hint: 'hfk mirrors rank URL… --name NAME shows which versions the mirrors have' });
    }
    const ref = parseImageRef((named ?? given)!, named !== undefined ? '--name' : 'image');
    const key = resolvePublicKey(required(ctx, 'key', 'the public key (PREFIX.pub) the manifest must be signed with'), '--key');
    const src = await mirrorSources(ctx);
    const out = str(ctx, 'out') ?? `${ref.name}.img`;
    await checkOut(out, ref.name);
    const json = flag(ctx, 'json');
    const cacheDir = str(ctx, 'cache');
    if (cacheDir) noteNewFolder(ctx.io, `--cache ${cacheDir}`, path.resolve(cacheDir));
    const soft = flag(ctx, 'soft');
    let toldHard = false;
    const opened = await openImage({
      mirrors: src.mirrors,
      proxy: src.proxy,
      netrc: src.netrc,
      name: ref.name,
      version: ref.version,
      key,
      cacheDir,
      cacheBytes: parseSize(str(ctx, 'cache-size') ?? '4G', '--cache-size'),
      mode: soft ? 'soft' : 'hard',
      softTimeoutMs: (int(ctx, 'soft-timeout', 1, 86_400) ?? 30) * 1000,
      mirrorOptions: src.transfer,
      log: (l) => {
        ctx.io.err(`${ctx.io.tty ? '\r\x1b[2K' : ''}${l}\n`); // clears the progress bar's line on a terminal
        if (!soft && !toldHard && /retrying in/.test(l)) {
          toldHard = true;
          ctx.io.err('  (get keeps retrying until a mirror has every block; --soft gives up after --soft-timeout seconds, Ctrl-C stops it)\n');
        }
      },
    });
    const t0 = performance.now();
    const tmp = `${out}.${process.pid}.${randomBytes(4).toString('hex')}.part`;
    const forget = removeOnInterrupt(tmp);
    try {
      if (!json && !flag(ctx, 'quiet')) ctx.io.err(formatRanking(opened.ranking));
      const { fetcher } = opened;
      const bar = new ProgressBar(ctx.io, { label: `get ${ref.name} v${opened.image.manifest.header.version}`, total: fetcher.size, unit: 'bytes' });
      const fh = await fs.open(tmp, 'wx', 0o644);
      try {
        const chunk = 8 << 20;
        // Keep two chunks in flight: one being written, one being fetched.
        let pending = fetcher.size > 0 ? fetcher.read(0, chunk) : undefined;
        for (let off = 0; off < fetcher.size; off += chunk) {
          const data = await pending!;
          pending = off + chunk < fetcher.size ? fetcher.read(off + chunk, chunk) : undefined;
          pending?.catch(() => {});
          await fh.write(data, 0, data.length, off);
          bar.update(off + data.length, fetcher.size);
        }
        await fh.sync();
      } finally {
        await fh.close();
      }
      await fs.rename(tmp, out);
      bar.done();
      const secs = (performance.now() - t0) / 1000;
      const s = fetcher.stats();
      const result = {
        name: ref.name,
        version: opened.image.manifest.header.version,
        out,
        bytes: fetcher.size,
        seconds: secs,
        manifestFrom: opened.image.from,
        offline: opened.image.offline,
        fetched: { bytes: s.bytesFetched, blocks: s.blocksFetched, diskHits: s.diskHits, zeroBlocks: s.zeroBlocks, hedges: s.hedges, failovers: s.failovers, retryRounds: s.retryRounds },
        mirrors: s.mirrors,
        ranking: opened.ranking,
      };
      if (json) printJson(ctx.io, result);
      else {
        ctx.io.out(
          `wrote ${out}: ${ref.name} v${result.version}, ${formatBytes(fetcher.size)} in ${secs.toFixed(1)} s (${(fetcher.size / secs / 1e6).toFixed(1)} MB/s)\n` +
            `  fetched ${s.blocksFetched} blocks, ${formatBytes(s.bytesFetched)} over the network; ${s.diskHits} from the disk cache; ${s.zeroBlocks} zero blocks\n` +
            `  ${s.failovers} failovers, ${s.hedges} hedged requests (${s.hedgesWon} won), ${s.retryRounds} retry rounds\n`,
        );
      }
      return 0;
    } catch (e) {
      await fs.rm(tmp, { force: true });
      throw e;
    } finally {
      forget();
      await opened.close();
    }
  },
};
