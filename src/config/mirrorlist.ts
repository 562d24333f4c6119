// A mirror list (hfk.mirrorlist=, --mirrorlist): a file of mirror URLs, one
// per line, read from a URL (through the proxy, like blocks) or a path (a
// file on this host, or one packed into the initramfs).

import { HfkError, InputError } from '../errors.ts';
import { Origins } from '../source/origin.ts';
import { parseMirrorList } from './config.ts';
import { redactUrl } from '../store/auth.ts';
import type { NetrcEntry } from '../store/netrc.ts';
import type { ProxySetting } from '../store/proxy.ts';

/** The largest mirror list read (a line per mirror: thousands of mirrors fit). */
export const MIRROR_LIST_MAX_BYTES = 1 << 20;

export interface MirrorListOptions {
  proxy?: ProxySetting | undefined;
  /** netrc logins for a list URL given without credentials. */
  netrc?: readonly NetrcEntry[] | undefined;
  /** Longest wait for the whole list (default 10 s). */
  timeoutMs?: number;
}

/** The mirrors a list names (normalized, each once); InputError naming the list when it cannot be read. */
export async function readMirrorList(location: string, options: MirrorListOptions = {}): Promise<string[]> {
  const timeoutMs = options.timeoutMs ?? 10_000;
  const origins = new Origins({ proxy: options.proxy, netrc: options.netrc, connections: 1, pipelining: 1, headersTimeoutMs: timeoutMs, bodyTimeoutMs: timeoutMs });
  const deadline = AbortSignal.timeout(timeoutMs);
  let bytes: Buffer;
  try {
    bytes = await origins.readFile(location, { maxBytes: MIRROR_LIST_MAX_BYTES, signal: deadline });
  } catch (e) {
    const why = deadline.aborted ? `no whole answer within ${timeoutMs / 1000} s` : e instanceof Error ? e.message : String(e);
    throw new InputError(`cannot read the mirror list ${redactUrl(location)}: ${why}`, {
      hint: 'check the mirror list location (a URL or a file path) and the network',
      ...(e instanceof HfkError ? { cause: e } : {}),
    });
  } finally {
    await origins.close();
  }
  return parseMirrorList(bytes.toString('utf8'), `mirror list ${redactUrl(location)}`);
}
