import { UsageError } from '../../errors.ts';
import { resolvePublicKey } from '../../format/keys.ts';
import { ImageName } from '../../format/manifest.ts';
import { openMirrors } from '../../fetch/open.ts';
import { formatRanking, rankMirrors } from '../../fetch/rank.ts';
import { normalizeBaseUrl } from '../../store/http.ts';
import { type Command, flag, int, printJson, required, str } from '../command.ts';
import { MIRROR_OPTIONS, mirrorSources } from '../mirrorargs.ts';
import { anyProxy } from '../../store/proxy.ts';

export const mirrorsCommand: Command = {
  name: 'mirrors',
  summary: 'Rank mirrors by measured latency and bandwidth (a netselect for HTTP).',
  usage: 'rank [URL…] --name NAME [--key PREFIX.pub] [--mirrorlist FILE|URL] [--proxy URL] [--json]',
  description: `
Probes every mirror at once: TCP connect time and time to first byte of the
image's pointer over a few rounds, the transfer of its manifest, then three
real block objects of typical size. The score is the expected time to fetch
one block (the fastest of those fetches, inflated by loss); the best mirror
comes first. Probing stops early once no mirror still probing can win.
A pointer is unsigned: with --key, the version it claims counts only once the
manifest verifies, and only a verified manifest names blocks to probe; without
it, versions are shown as claimed ("3?") and no block is fetched.`,
  options: {
    name: { type: 'string', arg: 'NAME', description: 'image whose pointer and manifest are probed' },
    key: { type: 'string', arg: 'PREFIX.pub', description: 'public key the manifest must be signed with (versions and block probes need it)' },
    ...MIRROR_OPTIONS,
    rounds: { type: 'string', arg: 'N', description: 'probe rounds per mirror', default: '3' },
    deadline: { type: 'string', arg: 'MS', description: 'stop probing slow mirrors after this long', default: '1500' },
    icmp: { type: 'boolean', description: 'also show ICMP round trips from the system ping (not scored)' },
    json: { type: 'boolean', description: 'print the ranking as JSON' },
  },
  positionals: { min: 1, max: Infinity },
  async run(ctx) {
    const [sub, ...urls] = ctx.positionals;
    if (sub !== 'rank') throw new UsageError(`hfk mirrors has one subcommand, rank: got '${sub}'`, { hint: 'hfk mirrors rank URL… --name NAME' });
    const name = required(ctx, 'name', 'the image whose pointer the mirrors are probed with');
    if (!ImageName.safeParse(name).success) throw new UsageError(`--name is not a valid image name: '${name}'`);
    const keyArg = str(ctx, 'key');
    const key = keyArg !== undefined ? resolvePublicKey(keyArg, '--key') : undefined;
    const src = await mirrorSources(ctx, urls.map((u) => normalizeBaseUrl(u, 'mirror URL')));
    const set = openMirrors(src.mirrors, { proxy: src.proxy, netrc: src.netrc });
    try {
      const ranking = await rankMirrors(set.mirrors, {
        name,
        key,
        rounds: int(ctx, 'rounds', 1, 20) ?? 3,
        deadlineMs: int(ctx, 'deadline', 50, 600_000) ?? 1500,
        icmp: flag(ctx, 'icmp'),
        viaProxy: anyProxy(src.proxy),
      });
      if (flag(ctx, 'json')) printJson(ctx.io, ranking);
      else ctx.io.out(formatRanking(ranking));
      if (ranking.mirrors.some((m) => Number.isFinite(m.score))) return 0;
      ctx.io.err(`hfk mirrors: no mirror answered for ${name}: all ${ranking.mirrors.length} dead (the reasons are in the last column)\n  hint: check the URLs, the image name (--name) and the network\n`);
      return 1;
    } finally {
      await set.close();
    }
  },
};
