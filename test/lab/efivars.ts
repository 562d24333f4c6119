// OVMF's variable store (the VARS flash file) edited offline: enrol a
// certificate in db, add a boot option with a URL. virt-firmware's
// virt-fw-vars does this but is not packaged in Debian 12, and the format
// is small: a firmware volume holding an authenticated variable store,
// variables appended one after another, a replaced one marked deleted.

import { X509Certificate } from 'node:crypto';
import { writeFileSync } from 'node:fs';

export const EFI_GLOBAL_VARIABLE = '8be4df61-93ca-11d2-aa0d-00e098032b8c';
export const EFI_IMAGE_SECURITY_DATABASE = 'd719b2cb-3d3a-4596-a3bc-dad00e67656f';
const EFI_CERT_X509 = 'a5c059a1-94e4-4aa7-87b5-ab155c2bf072';
const AUTHENTICATED_VARIABLE_STORE = 'aaf32c78-947b-439a-a180-2e144ec37792';
/** The owner recorded with hfk's enrolled certificates (any GUID will do). */
const HFK_OWNER = '48464b00-7565-6669-8000-000000000001';

const VAR_START_ID = 0x55aa;
const VAR_ADDED = 0x3f;
const VAR_DELETED = 0xfd;
const HEADER = 60; // AUTHENTICATED_VARIABLE_HEADER
const STORE_HEADER = 28; // VARIABLE_STORE_HEADER

/** NV | BS | RT */
export const ATTR_NV_BS_RT = 0x7;
/** NV | BS | RT | TIME_BASED_AUTHENTICATED_WRITE_ACCESS */
export const ATTR_TIME_AUTH = 0x27;

export interface EfiVariable {
  offset: number;
  name: string;
  guid: string;
  attributes: number;
  state: number;
  timestamp: Buffer;
  data: Buffer;
}

export interface VarStore {
  bytes: Buffer;
  start: number;
  end: number;
  /** Where the next variable goes. */
  free: number;
  variables: EfiVariable[];
}

/** A GUID in EFI's byte order (the first three fields little-endian). */
export function guidBytes(guid: string): Buffer {
  const h = guid.replaceAll('-', '');
  if (!/^[0-9a-f]{32}$/i.test(h)) throw new Error(`not a GUID: ${guid}`);
  const b = Buffer.from(h, 'hex');
  return Buffer.concat([b.subarray(0, 4).reverse(), b.subarray(4, 6).reverse(), b.subarray(6, 8).reverse(), b.subarray(8)]);
}

export function guidText(b: Buffer): string {
  const h = Buffer.concat([Buffer.from(b.subarray(0, 4)).reverse(), Buffer.from(b.subarray(4, 6)).reverse(), Buffer.from(b.subarray(6, 8)).reverse(), b.subarray(8, 16)]).toString('hex');
  return `${h.slice(0, 8)}-${h.slice(8, 12)}-${h.slice(12, 16)}-${h.slice(16, 20)}-${h.slice(20)}`;
}

const align4 = (n: number) => (n + 3) & ~3;

/** Parses an OVMF VARS file (a copy: edits change `bytes`). */
export function readVarStore(file: Buffer): VarStore {
  const bytes = Buffer.from(file);
  if (bytes.toString('latin1', 40, 44) !== '_FVH') throw new Error('not a firmware volume: no _FVH signature');
  const start = bytes.readUInt16LE(48);
  if (guidText(bytes.subarray(start, start + 16)) !== AUTHENTICATED_VARIABLE_STORE) throw new Error('not an authenticated variable store');
  const end = start + bytes.readUInt32LE(start + 16);
  const variables: EfiVariable[] = [];
  let p = start + STORE_HEADER;
  while (p + HEADER <= end && bytes.readUInt16LE(p) === VAR_START_ID) {
    const nameSize = bytes.readUInt32LE(p + 36);
    const dataSize = bytes.readUInt32LE(p + 40);
    variables.push({
      offset: p,
      state: bytes[p + 2]!,
      attributes: bytes.readUInt32LE(p + 4),
      timestamp: Buffer.from(bytes.subarray(p + 16, p + 32)),
      guid: guidText(bytes.subarray(p + 44, p + 60)),
      name: bytes.toString('utf16le', p + HEADER, p + HEADER + nameSize - 2),
      data: Buffer.from(bytes.subarray(p + HEADER + nameSize, p + HEADER + nameSize + dataSize)),
    });
    p = align4(p + HEADER + nameSize + dataSize);
  }
  return { bytes, start, end, free: p, variables };
}

/** Added and not deleted (0x3e: added, its replacement not yet written). */
const isLive = (v: EfiVariable) => v.state === VAR_ADDED || v.state === (VAR_ADDED & 0xfe);

/** The live value of a variable. */
export function getVariable(store: VarStore, name: string, guid: string): EfiVariable | undefined {
  return store.variables.filter((v) => v.name === name && v.guid === guid && isLive(v)).at(-1);
}

/** Sets a variable: the live copy is marked deleted, the new one appended. */
export function setVariable(store: VarStore, v: { name: string; guid: string; attributes: number; data: Buffer; timestamp?: Buffer }): void {
  for (const old of store.variables) {
    if (old.name === v.name && old.guid === v.guid && isLive(old)) {
      old.state &= VAR_DELETED;
      store.bytes[old.offset + 2] = old.state;
    }
  }
  const name = Buffer.from(`${v.name}\0`, 'utf16le');
  const size = HEADER + name.length + v.data.length;
  if (store.free + size > store.end) throw new Error(`variable store full: ${v.name} needs ${size} bytes`);
  const h = Buffer.alloc(HEADER);
  h.writeUInt16LE(VAR_START_ID, 0);
  h[2] = VAR_ADDED;
  h.writeUInt32LE(v.attributes, 4);
  (v.timestamp ?? Buffer.alloc(16)).copy(h, 16);
  h.writeUInt32LE(name.length, 36);
  h.writeUInt32LE(v.data.length, 40);
  guidBytes(v.guid).copy(h, 44);
  const at = store.free;
  Buffer.concat([h, name, v.data]).copy(store.bytes, at);
  store.variables.push({ offset: at, name: v.name, guid: v.guid, attributes: v.attributes, state: VAR_ADDED, timestamp: v.timestamp ?? Buffer.alloc(16), data: v.data });
  store.free = align4(at + size);
}

/** An EFI_SIGNATURE_LIST holding one X.509 certificate. */
export function x509SignatureList(der: Buffer, owner = HFK_OWNER): Buffer {
  const head = Buffer.alloc(28);
  guidBytes(EFI_CERT_X509).copy(head, 0);
  head.writeUInt32LE(28 + 16 + der.length, 16);
  head.writeUInt32LE(0, 20);
  head.writeUInt32LE(16 + der.length, 24);
  return Buffer.concat([head, guidBytes(owner), der]);
}

/** Appends a certificate (PEM) to db, keeping what is there (e.g. Microsoft's CAs). */
export function enrollDbCertificate(store: VarStore, pem: string): void {
  const der = Buffer.from(new X509Certificate(pem).raw);
  const db = getVariable(store, 'db', EFI_IMAGE_SECURITY_DATABASE);
  const timestamp = db?.timestamp ?? Buffer.from([0xe9, 0x07, 1, 1, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0]);
  setVariable(store, { name: 'db', guid: EFI_IMAGE_SECURITY_DATABASE, attributes: ATTR_TIME_AUTH, timestamp, data: Buffer.concat([db?.data ?? Buffer.alloc(0), x509SignatureList(der)]) });
}

/**
 * An EFI_LOAD_OPTION whose device path is a lone URI node (the short form
 * EDK2 expands to whichever network card can fetch it: HTTP Boot).
 */
export function uriLoadOption(uri: string, description: string): Buffer {
  const text = Buffer.from(uri, 'latin1');
  const node = Buffer.alloc(4);
  node[0] = 0x03; // messaging device path
  node[1] = 24; // URI
  node.writeUInt16LE(4 + text.length, 2);
  const path = Buffer.concat([node, text, Buffer.from([0x7f, 0xff, 0x04, 0x00])]);
  const head = Buffer.alloc(6);
  head.writeUInt32LE(1, 0); // LOAD_OPTION_ACTIVE
  head.writeUInt16LE(path.length, 4);
  return Buffer.concat([head, Buffer.from(`${description}\0`, 'utf16le'), path]);
}

/** Adds a boot option for URI, first in BootOrder. Returns its number. */
export function addUriBootOption(store: VarStore, uri: string, description: string): number {
  const used = new Set(store.variables.filter((v) => v.guid === EFI_GLOBAL_VARIABLE && isLive(v) && /^Boot[0-9A-F]{4}$/.test(v.name)).map((v) => Number.parseInt(v.name.slice(4), 16)));
  let n = 0x100;
  while (used.has(n)) n++;
  const name = `Boot${n.toString(16).toUpperCase().padStart(4, '0')}`;
  setVariable(store, { name, guid: EFI_GLOBAL_VARIABLE, attributes: ATTR_NV_BS_RT, data: uriLoadOption(uri, description) });
  const order = getVariable(store, 'BootOrder', EFI_GLOBAL_VARIABLE);
  const rest: number[] = [];
  for (let i = 0; order && i + 1 < order.data.length; i += 2) if (order.data.readUInt16LE(i) !== n) rest.push(order.data.readUInt16LE(i));
  const data = Buffer.alloc(2 * (rest.length + 1));
  [n, ...rest].forEach((x, i) => data.writeUInt16LE(x, 2 * i));
  setVariable(store, { name: 'BootOrder', guid: EFI_GLOBAL_VARIABLE, attributes: ATTR_NV_BS_RT, data });
  return n;
}

export function writeVarStore(path: string, store: VarStore): void {
  writeFileSync(path, store.bytes);
}
