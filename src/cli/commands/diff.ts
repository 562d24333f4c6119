import { UsageError } from '../../errors.ts';
import { resolvePublicKey } from '../../format/keys.ts';
import { parseImageRef } from '../../format/manifest.ts';
import { diffVersions } from '../../publish/diff.ts';
import { openStore } from '../../source/origin.ts';
import { formatBytes } from '../../util/size.ts';
import { type Command, flag, printJson, required, str } from '../command.ts';

export const diffCommand: Command = {
  name: 'diff',
  summary: 'Show the blocks and bytes a client holding one version must fetch to get another.',
  usage: '--store DIR|URL NAME@V1 NAME@V2 [--key PREFIX.pub] [--json]',
  description: 'NAME without @VERSION means the latest version. With --key, both manifests must verify.',
  options: {
    store: { type: 'string', arg: 'DIR|URL', description: 'store folder or mirror URL' },
    key: { type: 'string', arg: 'PREFIX.pub', description: 'verify both manifests with this public key' },
    json: { type: 'boolean', description: 'print the result as JSON' },
  },
  positionals: { min: 2, max: 2 },
  async run(ctx) {
    const location = required(ctx, 'store', 'the store folder or mirror URL');
    const a = parseImageRef(ctx.positionals[0]!, 'first version');
    const b = parseImageRef(ctx.positionals[1]!, 'second version');
    if (a.name !== b.name) throw new UsageError(`diff compares two versions of one image: got '${a.name}' and '${b.name}'`);
    const keyText = str(ctx, 'key');
    const key = keyText ? resolvePublicKey(keyText, '--key') : null;
    const store = await openStore(location);
    try {
      const r = await diffVersions(store, a.name, a.version, b.version, key);
      if (flag(ctx, 'json')) printJson(ctx.io, r);
      else {
        ctx.io.out(
          `${r.name} v${r.from} → v${r.to}: ${r.blocks.changed} of ${r.blocks.total} blocks changed\n` +
            `  fetch ${r.blocks.fetch} objects, ${formatBytes(r.bytes.fetch)} (${formatBytes(r.bytes.fetchData)} uncompressed), ` +
            `${r.bytes.full ? ((100 * r.bytes.fetch) / r.bytes.full).toFixed(1) : '0'}% of the ${formatBytes(r.bytes.full)} a fresh client fetches\n`,
        );
      }
      return 0;
    } finally {
      await store.close();
    }
  },
};
