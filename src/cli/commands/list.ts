import { UsageError } from '../../errors.ts';
import { resolvePublicKey } from '../../format/keys.ts';
import { ImageName } from '../../format/manifest.ts';
import { type ImageListing, listStore, type StoreListing, type VersionInfo } from '../../publish/list.ts';
import { openStore } from '../../source/origin.ts';
import { formatBytes } from '../../util/size.ts';
import { type Command, flag, list, printJson, str } from '../command.ts';

export const listCommand: Command = {
  name: 'list',
  summary: "List a store's images and versions: which one the pointer names, sizes, signatures.",
  usage: 'STORE|URL [--name NAME] [--key PREFIX.pub] [--json]',
  description: `
A folder is listed from its files: every image, every version with a manifest.
A mirror URL cannot be listed (HTTP has no folder listing): give --name, and
the versions shown are the pointer's and the chain of previous versions the
mirror still has, each checked against the digest the newer one names. With
--key, every manifest's signature is checked. Exits with status 1 when a
pointer or manifest cannot be read, the chain is broken, or (with --key) a
manifest does not verify.`,
  options: {
    name: { type: 'string', arg: 'NAME', multiple: true, description: 'only this image (repeat or comma-separate for more; needed for a URL)' },
    key: { type: 'string', arg: 'PREFIX.pub', description: 'check every manifest\'s signature with this public key' },
    json: { type: 'boolean', description: 'print the listing as JSON' },
  },
  positionals: { min: 1, max: 1 },
  async run(ctx) {
    const location = ctx.positionals[0]!;
    const names = list(ctx, 'name');
    for (const n of names) if (!ImageName.safeParse(n).success) throw new UsageError(`--name is not a valid image name: '${n}'`);
    const keyText = str(ctx, 'key');
    const key = keyText ? resolvePublicKey(keyText, '--key') : null;
    const store = await openStore(location);
    try {
      const r = await listStore(store, { key, ...(names.length ? { names } : {}) });
      if (flag(ctx, 'json')) printJson(ctx.io, r);
      else ctx.io.out(listingText(r));
      return r.ok ? 0 : 1;
    } finally {
      await store.close();
    }
  },
};

function signature(v: VersionInfo): string {
  if (v.verified === true) return 'verified';
  if (v.verified === false) return 'FAILS';
  return v.header ? `key ${v.header.keyId} (not checked)` : '?';
}

function imageText(img: ImageListing): string[] {
  const n = img.versions.length;
  const lines = [`${img.name}: ${img.pointer === null ? 'no readable pointer' : `pointer → v${img.pointer}`}, ${n} version${n === 1 ? '' : 's'} listed`];
  const rows = [['', 'VERSION', 'CREATED', 'IMAGE', 'BLOCKS', 'STORED', 'PREVIOUS', 'SIGNATURE']];
  for (const v of img.versions) {
    const h = v.header;
    rows.push([
      v.latest ? '→' : '',
      `v${v.version}`,
      h ? h.created.replace(/\.\d+Z$/, 'Z') : 'unreadable',
      h ? `${formatBytes(h.imageSize)} ${h.filesystem}` : '',
      h ? `${h.blockCount} × ${formatBytes(h.blockSize)} ${h.codec}${h.profile ? ' +profile' : ''}` : '',
      v.storedBytes === undefined ? '' : formatBytes(v.storedBytes),
      h?.previous ? `v${h.previous.version}` : h ? '-' : '',
      signature(v),
    ]);
  }
  const widths = rows[0]!.map((_, c) => Math.max(...rows.map((r) => r[c]!.length)));
  for (const r of rows) lines.push(`  ${r.map((cell, c) => cell.padEnd(widths[c]!)).join('  ').trimEnd()}`);
  if (img.olderNotOnMirror !== undefined) lines.push(`  (v${img.olderNotOnMirror} and older are not on this mirror)`);
  for (const v of img.versions) if (v.problem) lines.push(`  PROBLEM v${v.version}: ${v.problem}`);
  for (const p of img.problems) lines.push(`  PROBLEM: ${p}`);
  return lines;
}

export function listingText(r: StoreListing): string {
  const n = r.images.length;
  const lines = [`store ${r.store}: ${n} image${n === 1 ? '' : 's'}${r.keyId ? `, signatures checked with key ${r.keyId}` : ''}`];
  for (const img of r.images) lines.push('', ...imageText(img));
  return `${lines.join('\n')}\n`;
}
