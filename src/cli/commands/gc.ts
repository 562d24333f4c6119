import { UsageError } from '../../errors.ts';
import { gcStore } from '../../publish/gc.ts';
import { LocalStore } from '../../store/local.ts';
import { formatBytes } from '../../util/size.ts';
import { type Command, flag, int, printJson, required } from '../command.ts';

function plural(n: number, word: string): string {
  return `${n} ${word}${n === 1 ? '' : 's'}`;
}

export const gcCommand: Command = {
  name: 'gc',
  summary: 'Remove block objects that no kept manifest references.',
  usage: '--store DIR [--keep N] [--dry-run] [--json]',
  description: `
With --keep N, only the N newest versions of each image are kept (the one the
pointer names always is); older manifests are removed first, then every object
no kept manifest references. Without --keep, all versions are kept and only
orphans (and leftovers of interrupted publishes) go.`,
  options: {
    store: { type: 'string', arg: 'DIR', description: 'store folder' },
    keep: { type: 'string', arg: 'N', description: 'versions to keep per image', default: 'all' },
    'dry-run': { type: 'boolean', description: 'only report what would be removed' },
    json: { type: 'boolean', description: 'print the result as JSON' },
  },
  positionals: { min: 0, max: 0 },
  async run(ctx) {
    const store = await LocalStore.open(required(ctx, 'store', 'the store folder to clean'));
    const keep = int(ctx, 'keep', 1, 1_000_000);
    // A folder without images is not a store (or an empty one): its blocks/ would all count as unused.
    if ((await store.listImages()).length === 0) {
      throw new UsageError(`${store.root} has no images (no images/NAME/ with a pointer): not a store, or nothing published yet`, { hint: 'check --store: the folder hfk publish --store wrote' });
    }
    const r = await gcStore(store, { ...(keep ? { keep } : {}), dryRun: flag(ctx, 'dry-run') });
    if (flag(ctx, 'json')) printJson(ctx.io, r);
    else {
      const verb = r.dryRun ? 'would remove' : 'removed';
      ctx.io.out(
        `${verb} ${plural(r.manifestsRemoved.length, 'manifest')}, ${r.blocksRemoved} block objects (${formatBytes(r.bytesRemoved)}), ${r.temporariesRemoved} leftover temporary files\n` +
          `kept ${plural(r.manifestsKept.length, 'manifest')} and ${r.blocksKept} block objects\n`,
      );
    }
    return 0;
  },
};
