// The config and key files mkinitrd bakes into the initramfs
// (/etc/hfk/hfk.yaml and /etc/hfk/hfk.pub), checked with the init's own
// config schema, and what the boot entries take from them.

import { dirname, isAbsolute, resolve } from 'node:path';
import { parseDocument } from 'yaml';
import { isInlineKey, parseConfig } from '../config/config.ts';
import { InputError } from '../errors.ts';
import { formatPublicKey, loadPublicKey } from '../format/keys.ts';
import { CONFIG_PATH, PUBLIC_KEY_PATH } from './build.ts';

export interface BakeInput {
  /** Text of a base hfk.yaml (--config), and its path for messages and relative key paths. */
  base?: { text: string; path: string };
  image?: string;
  /** Replace the config's mirror list. */
  mirrors?: string[];
  /** Text of the public key file (--key), baked as /etc/hfk/hfk.pub. */
  publicKey?: string;
}

export interface Baked {
  config: string;
  publicKey: string | undefined;
}

/**
 * The config and key files as they go into the initramfs. The base config
 * keeps its comments; --image and --mirrors replace its keys; a key (from
 * --key, or a key file the base config names) is baked as /etc/hfk/hfk.pub
 * and the config points there. The result is checked with the init's own
 * config schema. Pure apart from reading a key file the base config names.
 */
export function bakeConfig(input: BakeInput): Baked {
  const what = input.base?.path ?? 'the config';
  const doc = parseDocument(input.base?.text ?? '', { uniqueKeys: true });
  if (doc.errors.length) throw new InputError(`${what} is not valid YAML: ${doc.errors[0]!.message.split('\n')[0]}`);
  const js: unknown = doc.toJS() ?? {}; // a file of comments only is an empty mapping
  if (js === null || typeof js !== 'object' || Array.isArray(js)) throw new InputError(`${what} must be a YAML mapping (key: value lines): got ${Array.isArray(js) ? 'a list' : typeof js}`);
  if (input.image !== undefined) doc.set('image', input.image);
  if (input.mirrors !== undefined) doc.set('mirrors', doc.createNode(input.mirrors));
  let publicKey = input.publicKey;
  const existing = (js as { key?: unknown }).key;
  if (publicKey === undefined && typeof existing === 'string' && !isInlineKey(existing.trim())) {
    // a key file named by the base config lives on this host: bake its contents
    const p = isAbsolute(existing) || !input.base ? existing : resolve(dirname(input.base.path), existing);
    publicKey = formatPublicKey(loadPublicKey(p), 'hfk');
  }
  if (publicKey !== undefined) doc.set('key', PUBLIC_KEY_PATH);
  const config = doc.toString();
  parseConfig(config, CONFIG_PATH); // the init's schema: throws ConfigError naming the key and line
  return { config, publicKey };
}

/**
 * hfk.image= and hfk.mirrors= for the boot entries: what the baked config
 * says (so the menu shows, and lets a person edit, where the boot goes).
 */
export function entrySettings(config: string): { image?: string; mirrors: string[] } {
  const c = parseConfig(config, CONFIG_PATH);
  return {
    ...(c.image ? { image: c.image.version === undefined ? c.image.name : `${c.image.name}@${c.image.version}` } : {}),
    mirrors: c.mirrors,
  };
}

/** The settings a boot needs that the baked config leaves to the kernel command line. */
export function missingSettings(baked: Baked): { what: string; option: string; param: string }[] {
  const c = parseConfig(baked.config, CONFIG_PATH);
  const out: { what: string; option: string; param: string }[] = [];
  if (!c.image) out.push({ what: 'the image', option: '--image', param: 'hfk.image=' });
  if (c.mirrors.length === 0 && c.mirrorlist === undefined) out.push({ what: 'the mirrors', option: '--mirrors', param: 'hfk.mirrors=' });
  if (c.key === undefined) out.push({ what: 'the key', option: '--key', param: 'hfk.key=' });
  return out;
}
