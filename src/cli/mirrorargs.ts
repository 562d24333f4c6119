// Where a command's mirrors come from: arguments and --mirrors, a mirror
// list (--mirrorlist FILE|URL), or a config file (--config hfk.yaml); the
// proxy (--proxy, the config's proxy:, else the environment's http_proxy,
// https_proxy, all_proxy and no_proxy, read here and nowhere else); and the
// netrc logins for private mirrors (the config's netrc:, else ~/.netrc).

import * as os from 'node:os';
import * as path from 'node:path';
import { UsageError } from '../errors.ts';
import { Config, loadConfig, transferOptions } from '../config/config.ts';
import { readMirrorList } from '../config/mirrorlist.ts';
import { normalizeBaseUrl } from '../store/http.ts';
import { loadNetrc, type NetrcEntry } from '../store/netrc.ts';
import { proxyFromEnv, type ProxySetting, resolveProxy, splitNoProxy } from '../store/proxy.ts';
import { type CommandContext, list, type OptionSpec, str } from './command.ts';

/** The options `mirrorSources` reads; commands spread them into their own. */
export const MIRROR_OPTIONS = {
  mirrors: { type: 'string', arg: 'URL,…', multiple: true, description: 'mirror URLs (http://USER:PASS@HOST/… for a private one; the password is never printed)' },
  mirrorlist: { type: 'string', arg: 'FILE|URL', description: 'a list of mirror URLs, one per line' },
  config: { type: 'string', arg: 'FILE', description: 'read mirrors, proxy and netrc from this hfk.yaml' },
  proxy: {
    type: 'string',
    arg: 'URL',
    description: "HTTP proxy (e.g. Squid) for every request; '' for none",
    default: '$http_proxy for http://, $https_proxy for https://, else $all_proxy, as curl',
  },
  'no-proxy': { type: 'string', arg: 'HOST,…', description: "hosts reached directly, not through the proxy ('*', names, .domains, IPs, CIDR, :PORT)", default: '$no_proxy' },
} satisfies Record<string, OptionSpec>;

export interface MirrorSources {
  /** Mirror URLs as given: they may carry credentials, so print them only through redactUrl. */
  mirrors: string[];
  proxy: ProxySetting | undefined;
  /** netrc logins (the config's netrc: file, else ~/.netrc when it exists). */
  netrc: NetrcEntry[];
  /** The transfer budget from --config's fetch: (else the defaults). */
  transfer: ReturnType<typeof transferOptions>;
}

export async function mirrorSources(ctx: Pick<CommandContext, 'values'>, extra: string[] = []): Promise<MirrorSources> {
  const mirrors = [...extra, ...list(ctx, 'mirrors').map((u) => normalizeBaseUrl(u, '--mirrors'))];
  const configFile = str(ctx, 'config');
  const cfg = configFile ? loadConfig(configFile) : undefined;
  const noProxy = str(ctx, 'no-proxy');
  const proxy = resolveProxy({
    explicit: str(ctx, 'proxy') ?? cfg?.proxy,
    noProxy: noProxy !== undefined ? splitNoProxy(noProxy) : cfg?.noProxy,
    env: proxyFromEnv(process.env),
  });
  const netrc = cfg?.netrc ? loadNetrc(cfg.netrc) : loadNetrc(path.join(os.homedir(), '.netrc'), { optional: true });
  // Mirror lists are read through the proxy, as blocks are.
  const ml = str(ctx, 'mirrorlist');
  if (ml) mirrors.push(...(await readMirrorList(ml, { proxy, netrc })));
  if (cfg && mirrors.length === 0) mirrors.push(...cfg.mirrors);
  if (cfg?.mirrorlist && mirrors.length === 0) mirrors.push(...(await readMirrorList(cfg.mirrorlist, { proxy, netrc })));
  if (mirrors.length === 0) {
    throw new UsageError('no mirrors given', { hint: 'pass mirror URLs, --mirrors URL,…, --mirrorlist FILE|URL, or --config hfk.yaml with a mirrors: list' });
  }
  return { mirrors: [...new Set(mirrors)], proxy, netrc, transfer: transferOptions((cfg ?? Config.parse({})).fetch) };
}
