import { mkdtempSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { afterAll, describe, expect, it } from 'vitest';
import { KeyError } from '../errors.ts';
import { generateKeyPair, loadPrivateKey, loadPublicKey, parsePublicKey, resolvePublicKey, signBytes, verifyBytes } from './keys.ts';

describe('keys', () => {
  const dir = mkdtempSync(join(tmpdir(), 'hfk-keys-'));
  afterAll(() => rmSync(dir, { recursive: true, force: true }));
  const pair = generateKeyPair('test');
  writeFileSync(join(dir, 'k.key'), pair.privatePem);
  writeFileSync(join(dir, 'k.pub'), pair.publicLine);

  it('round-trips a key pair through its files and signs/verifies', () => {
    const priv = loadPrivateKey(join(dir, 'k.key'));
    const pub = loadPublicKey(join(dir, 'k.pub'));
    expect(pub.id).toBe(priv.publicKey.id);
    expect(pub.id).toMatch(/^[0-9a-f]{16}$/);
    const sig = signBytes(priv, Buffer.from('data'));
    expect(verifyBytes(pub, Buffer.from('data'), sig)).toBe(true);
    expect(verifyBytes(pub, Buffer.from('date'), sig)).toBe(false);
  });

  it('accepts the .pub line, the bare base64 key and SPKI PEM', () => {
    const b64 = pair.publicKey.raw.toString('base64');
    expect(parsePublicKey(`hfk-ed25519 ${b64} c`, 'x').id).toBe(pair.publicKey.id);
    expect(resolvePublicKey(b64, 'hfk.key').id).toBe(pair.publicKey.id);
    const pem = pair.publicKey.key.export({ type: 'spki', format: 'pem' }).toString();
    expect(parsePublicKey(pem, 'x').id).toBe(pair.publicKey.id);
  });

  it('explains a swapped, missing or malformed key', () => {
    expect(() => loadPrivateKey(join(dir, 'k.pub'))).toThrow(/is not a private key \(it is a public key\)/);
    expect(() => parsePublicKey(pair.privatePem, '--key')).toThrow(/--key is a private key; give the public key/);
    expect(() => loadPublicKey(join(dir, 'nope.pub'))).toThrow(KeyError);
    expect(() => loadPublicKey(join(dir, 'nope.pub'))).toThrow(/public key file .*nope.pub does not exist/);
    expect(() => parsePublicKey('hfk-ed25519 abc', 'hfk.key')).toThrow(/hfk.key is not an hfk public key/);
    writeFileSync(join(dir, 'bad.key'), '-----BEGIN PRIVATE KEY-----\nAAAA\n-----END PRIVATE KEY-----\n');
    expect(() => loadPrivateKey(join(dir, 'bad.key'))).toThrow(/is damaged/);
  });
});
