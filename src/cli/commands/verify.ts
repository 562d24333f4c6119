import { resolvePublicKey } from '../../format/keys.ts';
import { ImageName } from '../../format/manifest.ts';
import { verifyStore } from '../../publish/verify.ts';
import { openStore } from '../../source/origin.ts';
import { UsageError } from '../../errors.ts';
import { formatBytes } from '../../util/size.ts';
import { type Command, flag, printJson, required, str } from '../command.ts';
import { ProgressBar } from '../progress.ts';

export const verifyCommand: Command = {
  name: 'verify',
  summary: 'Check a store: every manifest signature, every block present and hash-correct.',
  usage: '--store DIR|URL [--name NAME] --key PREFIX.pub [--json]',
  description: `
Lists every problem found and exits with status 1 if there is any. A folder is
checked for all of its images; a URL needs --name (HTTP cannot list folders)
and is checked for the chain of versions reachable from the image's pointer.`,
  options: {
    store: { type: 'string', arg: 'DIR|URL', description: 'store folder or mirror URL' },
    name: { type: 'string', arg: 'NAME', description: 'only this image' },
    key: { type: 'string', arg: 'PREFIX.pub', description: 'public key the manifests must be signed with' },
    json: { type: 'boolean', description: 'print the report as JSON' },
  },
  positionals: { min: 0, max: 0 },
  async run(ctx) {
    const location = required(ctx, 'store', 'the store folder or mirror URL to check');
    const key = resolvePublicKey(required(ctx, 'key', 'the public key (PREFIX.pub) manifests must be signed with'), '--key');
    const name = str(ctx, 'name');
    if (name !== undefined && !ImageName.safeParse(name).success) throw new UsageError(`--name is not a valid image name: '${name}'`);
    const store = await openStore(location);
    const bar = new ProgressBar(ctx.io, { label: 'verify', total: 0, unit: 'items' });
    try {
      const r = await verifyStore(store, { key, ...(name ? { name } : {}), onProgress: (d, t) => bar.update(d, t) });
      bar.done();
      if (flag(ctx, 'json')) printJson(ctx.io, r);
      else {
        for (const img of r.images) {
          ctx.io.out(`image ${img.name}: latest v${img.latest ?? '?'}, versions ${img.versions.length ? img.versions.join(', ') : 'none readable'}\n`);
        }
        ctx.io.out(`checked ${r.blocksChecked} blocks (${formatBytes(r.bytesChecked)}) in ${r.store}\n`);
        for (const p of r.problems) ctx.io.out(`PROBLEM ${p.kind}${p.image ? ` ${p.image}${p.version ? ` v${p.version}` : ''}` : ''}: ${p.message}\n`);
        ctx.io.out(r.ok ? 'OK: no problems found\n' : `FAILED: ${r.problems.length} problem${r.problems.length === 1 ? '' : 's'}\n`);
      }
      return r.ok ? 0 : 1;
    } finally {
      await store.close();
    }
  },
};
