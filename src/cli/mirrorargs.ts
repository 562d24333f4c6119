// Where a command's mirrors come from: arguments and --mirrors, a mirror
// list (--mirrorlist FILE|URL), or a config file (--config hfk.yaml); and
// the proxy (--proxy, or the config).

import { readFile } from 'node:fs/promises';
import { request } from 'undici';
import { HfkError, InputError, UsageError } from '../errors.ts';
import { loadConfig, parseMirrorList } from '../init/config.ts';
import { normalizeBaseUrl } from '../store/http.ts';
import { isUrl } from '../store/store.ts';
import { type CommandContext, list, type OptionSpec, str } from './command.ts';

/** The options `mirrorSources` reads; commands spread them into their own. */
export const MIRROR_OPTIONS = {
  mirrors: { type: 'string', arg: 'URL,…', multiple: true, description: 'mirror URLs' },
  mirrorlist: { type: 'string', arg: 'FILE|URL', description: 'a list of mirror URLs, one per line' },
  config: { type: 'string', arg: 'FILE', description: 'read mirrors and proxy from this hfk.yaml' },
  proxy: { type: 'string', arg: 'URL', description: 'HTTP proxy (e.g. Squid) to fetch through' },
} satisfies Record<string, OptionSpec>;

export async function readMirrorList(location: string): Promise<string[]> {
  if (isUrl(location)) {
    try {
      const res = await request(location, { headersTimeout: 10_000, bodyTimeout: 10_000 });
      if (res.statusCode !== 200) {
        await res.body.dump();
        throw new InputError(`mirror list ${location}: HTTP ${res.statusCode}`);
      }
      return parseMirrorList(await res.body.text(), `mirror list ${location}`);
    } catch (e) {
      if (e instanceof HfkError) throw e;
      throw new InputError(`cannot fetch mirror list ${location}: ${(e as Error).message}`);
    }
  }
  let text: string;
  try {
    text = await readFile(location, 'utf8');
  } catch (e) {
    throw new InputError(`cannot read mirror list ${location}: ${(e as Error).message}`);
  }
  return parseMirrorList(text, `mirror list ${location}`);
}

export interface MirrorSources {
  mirrors: string[];
  proxy: string | undefined;
}

export async function mirrorSources(ctx: Pick<CommandContext, 'values'>, extra: string[] = []): Promise<MirrorSources> {
  const mirrors = [...extra, ...list(ctx, 'mirrors').map((u) => normalizeBaseUrl(u, '--mirrors'))];
  const ml = str(ctx, 'mirrorlist');
  if (ml) mirrors.push(...(await readMirrorList(ml)));
  let proxy = str(ctx, 'proxy');
  const configFile = str(ctx, 'config');
  if (configFile) {
    const cfg = loadConfig(configFile);
    if (mirrors.length === 0) mirrors.push(...cfg.mirrors);
    if (mirrors.length === 0 && cfg.mirrorlist) mirrors.push(...(await readMirrorList(cfg.mirrorlist)));
    proxy ??= cfg.proxy ?? undefined;
  }
  if (proxy) proxy = normalizeBaseUrl(proxy, '--proxy');
  if (mirrors.length === 0) {
    throw new UsageError('no mirrors given', { hint: 'pass mirror URLs, --mirrors URL,…, --mirrorlist FILE|URL, or --config hfk.yaml with a mirrors: list' });
  }
  return { mirrors: [...new Set(mirrors)], proxy };
}
