// Where a command's mirrors come from: arguments and --mirrors, a mirror
// list (--mirrorlist FILE|URL), or a config file (--config hfk.yaml); and
// the proxy (--proxy, or the config).

import { UsageError } from '../errors.ts';
import { Config, loadConfig, transferOptions } from '../config/config.ts';
import { readMirrorList } from '../config/mirrorlist.ts';
import { normalizeBaseUrl } from '../store/http.ts';
import { type CommandContext, list, type OptionSpec, str } from './command.ts';

/** The options `mirrorSources` reads; commands spread them into their own. */
export const MIRROR_OPTIONS = {
  mirrors: { type: 'string', arg: 'URL,…', multiple: true, description: 'mirror URLs' },
  mirrorlist: { type: 'string', arg: 'FILE|URL', description: 'a list of mirror URLs, one per line' },
  config: { type: 'string', arg: 'FILE', description: 'read mirrors and proxy from this hfk.yaml' },
  proxy: { type: 'string', arg: 'URL', description: 'HTTP proxy (e.g. Squid) to fetch through' },
} satisfies Record<string, OptionSpec>;

export interface MirrorSources {
  mirrors: string[];
  proxy: string | undefined;
  /** The transfer budget from --config's fetch: (else the defaults). */
  transfer: ReturnType<typeof transferOptions>;
}

export async function mirrorSources(ctx: Pick<CommandContext, 'values'>, extra: string[] = []): Promise<MirrorSources> {
  const mirrors = [...extra, ...list(ctx, 'mirrors').map((u) => normalizeBaseUrl(u, '--mirrors'))];
  const configFile = str(ctx, 'config');
  const cfg = configFile ? loadConfig(configFile) : undefined;
  let proxy = str(ctx, 'proxy') ?? cfg?.proxy ?? undefined;
  if (proxy) proxy = normalizeBaseUrl(proxy, '--proxy');
  // Mirror lists are read through the proxy, as blocks are.
  const ml = str(ctx, 'mirrorlist');
  if (ml) mirrors.push(...(await readMirrorList(ml, { proxy })));
  if (cfg && mirrors.length === 0) mirrors.push(...cfg.mirrors);
  if (cfg?.mirrorlist && mirrors.length === 0) mirrors.push(...(await readMirrorList(cfg.mirrorlist, { proxy })));
  if (mirrors.length === 0) {
    throw new UsageError('no mirrors given', { hint: 'pass mirror URLs, --mirrors URL,…, --mirrorlist FILE|URL, or --config hfk.yaml with a mirrors: list' });
  }
  return { mirrors: [...new Set(mirrors)], proxy, transfer: transferOptions((cfg ?? Config.parse({})).fetch) };
}
