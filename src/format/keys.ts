// Ed25519 signing keys. The private key is a PKCS#8 PEM file (mode 0600);
// the public key is one line, `hfk-ed25519 <base64 of the 32-byte key> [comment]`,
// short enough for a kernel command line (`hfk.key=<base64>`).

import {
  createHash,
  createPrivateKey,
  createPublicKey,
  generateKeyPairSync,
  sign,
  verify,
  type KeyObject,
} from 'node:crypto';
import { readFileSync } from 'node:fs';
import { errnoCode, KeyError } from '../errors.ts';

export const PUBLIC_KEY_PREFIX = 'hfk-ed25519';
// SPKI DER prefix for an Ed25519 public key (RFC 8410): the raw key follows.
const ED25519_SPKI_PREFIX = Buffer.from('302a300506032b6570032100', 'hex');

export interface PublicKey {
  readonly key: KeyObject;
  readonly raw: Buffer; // 32 bytes
  readonly id: string; // 16 hex digits
}

export interface PrivateKey {
  readonly key: KeyObject;
  readonly publicKey: PublicKey;
}

export function keyIdOf(raw: Uint8Array): string {
  return createHash('sha256').update(raw).digest('hex').slice(0, 16);
}

function publicFromKeyObject(key: KeyObject): PublicKey {
  const der = key.export({ format: 'der', type: 'spki' });
  const raw = Buffer.from(der.subarray(der.length - 32));
  return { key, raw, id: keyIdOf(raw) };
}

export function publicKeyFromRaw(raw: Uint8Array): PublicKey {
  if (raw.length !== 32) throw new KeyError(`an Ed25519 public key is 32 bytes: got ${raw.length}`);
  const key = createPublicKey({ key: Buffer.concat([ED25519_SPKI_PREFIX, raw]), format: 'der', type: 'spki' });
  return { key, raw: Buffer.from(raw), id: keyIdOf(raw) };
}

export function generateKeyPair(comment = 'hfk'): { privatePem: string; publicLine: string; publicKey: PublicKey } {
  const { privateKey } = generateKeyPairSync('ed25519');
  const publicKey = publicFromKeyObject(createPublicKey(privateKey));
  const privatePem = privateKey.export({ format: 'pem', type: 'pkcs8' }).toString();
  return { privatePem, publicLine: formatPublicKey(publicKey, comment), publicKey };
}

export function formatPublicKey(pub: PublicKey, comment = 'hfk'): string {
  return `${PUBLIC_KEY_PREFIX} ${pub.raw.toString('base64')} ${comment.replace(/\s+/g, '_')}\n`;
}

/**
 * Parses a public key given as the one-line .pub format, a bare base64 key
 * (as on the kernel command line), or an SPKI PEM. `what` names the source.
 */
export function parsePublicKey(text: string, what: string): PublicKey {
  const t = text.trim();
  if (t.startsWith('-----BEGIN')) {
    if (t.includes('PRIVATE KEY')) {
      throw new KeyError(`${what} is a private key; give the public key (the .pub file)`, {
        hint: 'clients pin PREFIX.pub; PREFIX.key stays with the publisher',
      });
    }
    let key: KeyObject;
    try {
      key = createPublicKey(t);
    } catch (e) {
      throw new KeyError(`${what} is not a readable public key PEM: ${(e as Error).message}`);
    }
    if (key.asymmetricKeyType !== 'ed25519') {
      throw new KeyError(`${what} is a ${key.asymmetricKeyType} key; hfk uses Ed25519 keys`, {
        hint: 'make a key pair with: hfk keygen --out PREFIX',
      });
    }
    return publicFromKeyObject(key);
  }
  const parts = t.split(/\s+/);
  const b64 = parts[0] === PUBLIC_KEY_PREFIX ? parts[1] : parts.length === 1 ? parts[0] : undefined;
  if (!b64 || !/^[A-Za-z0-9+/]{43}=$/.test(b64)) {
    throw new KeyError(
      `${what} is not an hfk public key: expected '${PUBLIC_KEY_PREFIX} <base64 of 32 bytes>' or the bare base64 key`,
      { hint: 'use the PREFIX.pub file written by hfk keygen' },
    );
  }
  return publicKeyFromRaw(Buffer.from(b64, 'base64'));
}

function readKeyFile(path: string, kind: 'private' | 'public'): string {
  try {
    return readFileSync(path, 'utf8');
  } catch (e) {
    const code = errnoCode(e);
    if (code === 'ENOENT') {
      throw new KeyError(`${kind} key file ${path} does not exist`, {
        hint: kind === 'private' ? 'create a key pair with: hfk keygen --out PREFIX' : 'pass the PREFIX.pub file made by hfk keygen',
      });
    }
    if (code === 'EISDIR') throw new KeyError(`${kind} key ${path} is a directory, not a key file`);
    throw new KeyError(`cannot read ${kind} key file ${path}: ${(e as Error).message}`);
  }
}

export function loadPublicKey(path: string): PublicKey {
  return parsePublicKey(readKeyFile(path, 'public'), `public key file ${path}`);
}

/** A public key given either as a file path or inline (base64 / .pub line). */
export function resolvePublicKey(value: string, what: string): PublicKey {
  const t = value.trim();
  if (/^[A-Za-z0-9+/]{43}=$/.test(t) || t.startsWith(`${PUBLIC_KEY_PREFIX} `)) return parsePublicKey(t, what);
  return loadPublicKey(value);
}

export function loadPrivateKey(path: string): PrivateKey {
  const text = readKeyFile(path, 'private');
  if (!text.includes('PRIVATE KEY')) {
    throw new KeyError(`${path} is not a private key${text.startsWith(PUBLIC_KEY_PREFIX) ? ' (it is a public key)' : ''}`, {
      hint: 'sign with PREFIX.key made by hfk keygen, not PREFIX.pub',
    });
  }
  let key: KeyObject;
  try {
    key = createPrivateKey(text);
  } catch (e) {
    throw new KeyError(`private key file ${path} is damaged: ${(e as Error).message}`);
  }
  if (key.asymmetricKeyType !== 'ed25519') {
    throw new KeyError(`${path} is a ${key.asymmetricKeyType} key; hfk signs with Ed25519`, {
      hint: 'make a key pair with: hfk keygen --out PREFIX',
    });
  }
  return { key, publicKey: publicFromKeyObject(createPublicKey(key)) };
}

export function signBytes(key: PrivateKey, data: Uint8Array): Buffer {
  return sign(null, data, key.key);
}

export function verifyBytes(key: PublicKey, data: Uint8Array, signature: Uint8Array): boolean {
  return verify(null, data, key.key, signature);
}
