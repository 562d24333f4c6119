import { UsageError } from '../../errors.ts';
import { loadPrivateKey } from '../../format/keys.ts';
import { parseImageRef } from '../../format/manifest.ts';
import { promote } from '../../publish/promote.ts';
import { LocalStore } from '../../store/local.ts';
import { type Command, flag, printJson, required } from '../command.ts';

export const promoteCommand: Command = {
  name: 'promote',
  summary: 'Make an existing version the latest again (a signed rollback, not a replay).',
  usage: 'NAME@VERSION --store DIR --key PREFIX.key [--json]',
  description: `
Clients refuse a version older than one they have seen, so the pointer is not
moved back: promote writes a new version (the latest + 1) with the content of
VERSION (the same blocks and image), following the current latest and signed
with the key, then moves the pointer to it. Clients that have seen the latest
take it as an update. VERSION must be in the store, verify with the key, and
have all its blocks; the key must be the one that signs the image now.`,
  options: {
    store: { type: 'string', arg: 'DIR', description: 'store folder' },
    key: { type: 'string', arg: 'PREFIX.key', description: 'the private key that signs the image' },
    json: { type: 'boolean', description: 'print the result as JSON' },
  },
  positionals: { min: 1, max: 1 },
  async run(ctx) {
    const ref = parseImageRef(ctx.positionals[0]!, 'NAME@VERSION');
    if (ref.version === undefined) {
      throw new UsageError(`give the version to promote: ${ref.name}@VERSION`, { hint: 'hfk list STORE shows the versions' });
    }
    const dir = required(ctx, 'store', 'the store folder the image is published in');
    const key = loadPrivateKey(required(ctx, 'key', 'the private key (PREFIX.key) that signs the image'));
    await LocalStore.open(dir); // a store that does not exist is not made
    const store = await LocalStore.openWritable(dir);
    const r = await promote({ store, name: ref.name, version: ref.version, key });
    if (flag(ctx, 'json')) printJson(ctx.io, r);
    else if (r.unchanged) ctx.io.out(`${r.name}: v${r.version} has the content of v${r.from} already; nothing written\n`);
    else ctx.io.out(`promoted ${r.name} v${r.from} as v${r.version} (after v${r.previousVersion}) → ${r.manifest}\n`);
    return 0;
  },
};
