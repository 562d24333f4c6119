import * as fs from 'node:fs/promises';
import * as path from 'node:path';
import { errnoCode, UsageError } from '../../errors.ts';
import { generateKeyPair } from '../../format/keys.ts';
import { type Command, flag, printJson, required } from '../command.ts';

export const keygen: Command = {
  name: 'keygen',
  summary: 'Make an Ed25519 key pair for signing manifests.',
  usage: '--out PREFIX [--force] [--json]',
  description: `
Writes PREFIX.key (the private key, mode 0600: keep it with the publisher) and
PREFIX.pub (one line; give it to every client: hfk mount --key, hfk.key=, mkinitrd --key).`,
  options: {
    out: { type: 'string', arg: 'PREFIX', description: 'path prefix of the two key files' },
    force: { type: 'boolean', description: 'replace existing key files' },
    json: { type: 'boolean', description: 'print the result as JSON' },
  },
  positionals: { min: 0, max: 0 },
  async run(ctx) {
    const prefix = required(ctx, 'out', 'the path prefix for PREFIX.key and PREFIX.pub');
    if (prefix.endsWith('/') || path.basename(prefix) === '.' || path.basename(prefix) === '..') {
      throw new UsageError(`--out ${prefix} is a folder, not a prefix: the files would be hidden (.key, .pub)`, { hint: `e.g. --out ${path.join(prefix, 'hfk')} writes hfk.key and hfk.pub there` });
    }
    const keyFile = `${prefix}.key`;
    const pubFile = `${prefix}.pub`;
    const { privatePem, publicLine, publicKey } = generateKeyPair(path.basename(prefix));
    const mode = flag(ctx, 'force') ? 'w' : 'wx';
    // Write the public key first: if the private key cannot be written, remove it again.
    try {
      await fs.writeFile(pubFile, publicLine, { flag: mode, mode: 0o644 });
    } catch (e) {
      if (errnoCode(e) === 'EEXIST') throw new UsageError(`${pubFile} already exists`, { hint: 'choose another --out PREFIX, or pass --force to replace the key pair' });
      if (errnoCode(e) === 'ENOENT') throw new UsageError(`cannot write ${pubFile}: folder ${path.dirname(pubFile)} does not exist`);
      throw new UsageError(`cannot write ${pubFile}: ${(e as Error).message}`);
    }
    try {
      await fs.writeFile(keyFile, privatePem, { flag: mode, mode: 0o600 });
      await fs.chmod(keyFile, 0o600);
    } catch (e) {
      await fs.rm(pubFile, { force: true });
      if (errnoCode(e) === 'EEXIST') throw new UsageError(`${keyFile} already exists`, { hint: 'choose another --out PREFIX, or pass --force to replace the key pair' });
      throw new UsageError(`cannot write ${keyFile}: ${(e as Error).message}`);
    }
    if (flag(ctx, 'json')) printJson(ctx.io, { privateKey: keyFile, publicKey: pubFile, keyId: publicKey.id, publicKeyBase64: publicKey.raw.toString('base64') });
    else ctx.io.out(`wrote ${keyFile} (private, mode 0600) and ${pubFile} (public)\nkey id ${publicKey.id}; kernel command line: hfk.key=${publicKey.raw.toString('base64')}\n`);
    return 0;
  },
};
