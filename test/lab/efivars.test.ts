import { execFileSync } from 'node:child_process';
import { existsSync, mkdtempSync, readFileSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { afterAll, describe, expect, it } from 'vitest';
import { addUriBootOption, EFI_GLOBAL_VARIABLE, EFI_IMAGE_SECURITY_DATABASE, enrollDbCertificate, getVariable, guidBytes, guidText, readVarStore, setVariable, uriLoadOption, x509SignatureList } from './efivars.ts';

const MS_VARS = '/usr/share/OVMF/OVMF_VARS_4M.ms.fd';
const BLANK_VARS = '/usr/share/OVMF/OVMF_VARS_4M.fd';
const work = mkdtempSync(join(tmpdir(), 'hfk-efivars-'));
afterAll(() => rmSync(work, { recursive: true, force: true }));

function cert(cn: string): string {
  const out = join(work, `${cn}.crt`);
  execFileSync('openssl', ['req', '-new', '-x509', '-newkey', 'rsa:2048', '-nodes', '-days', '30', '-subj', `/CN=${cn}/`, '-keyout', join(work, `${cn}.key`), '-out', out], { stdio: 'ignore' });
  return readFileSync(out, 'latin1');
}

describe('GUIDs', () => {
  it('are stored with the first three fields little-endian, and read back the same', () => {
    expect(guidBytes('8be4df61-93ca-11d2-aa0d-00e098032b8c').toString('hex')).toBe('61dfe48bca93d211aa0d00e098032b8c');
    expect(guidText(guidBytes('d719b2cb-3d3a-4596-a3bc-dad00e67656f'))).toBe('d719b2cb-3d3a-4596-a3bc-dad00e67656f');
    expect(() => guidBytes('not-a-guid')).toThrow('not a GUID: not-a-guid');
  });
});

describe("OVMF's variable store", () => {
  if (!existsSync(MS_VARS)) throw new Error(`${MS_VARS} missing: apt-get install ovmf`);

  it("reads Debian's Secure Boot store: PK, KEK, db with Microsoft's CAs, SecureBootEnable", () => {
    const s = readVarStore(readFileSync(MS_VARS));
    expect(getVariable(s, 'PK', EFI_GLOBAL_VARIABLE)?.data.length).toBeGreaterThan(500);
    expect(getVariable(s, 'db', EFI_IMAGE_SECURITY_DATABASE)?.data.includes(Buffer.from('Microsoft Corporation UEFI CA 2011'))).toBe(true);
    expect(getVariable(s, 'BootOrder', EFI_GLOBAL_VARIABLE)).toBeUndefined(); // written and deleted while the store was made
    expect(readVarStore(readFileSync(BLANK_VARS)).variables).toEqual([]);
    expect(() => readVarStore(Buffer.alloc(4096))).toThrow('not a firmware volume: no _FVH signature');
  });

  it('appends a certificate to db: the old value deleted, the new one holding both', () => {
    const s = readVarStore(readFileSync(MS_VARS));
    const before = getVariable(s, 'db', EFI_IMAGE_SECURITY_DATABASE)!;
    const pem = cert('hfk-db-test');
    enrollDbCertificate(s, pem);
    const again = readVarStore(s.bytes); // what the firmware will read
    const db = getVariable(again, 'db', EFI_IMAGE_SECURITY_DATABASE)!;
    expect(db.data.subarray(0, before.data.length).equals(before.data)).toBe(true);
    expect(db.data.includes(Buffer.from('hfk-db-test'))).toBe(true);
    expect(db.attributes).toBe(0x27);
    expect(db.timestamp.equals(before.timestamp)).toBe(true);
    expect(again.variables.filter((v) => v.name === 'db' && v.guid === EFI_IMAGE_SECURITY_DATABASE).map((v) => v.state)).toEqual([0x3d, 0x3f]);
    const list = db.data.subarray(before.data.length);
    expect(list.readUInt32LE(16)).toBe(list.length); // SignatureListSize covers the whole list
    expect(x509SignatureList(Buffer.from('x')).length).toBe(28 + 16 + 1);
  });

  it('adds a boot option with a URL first in BootOrder, under a free number', () => {
    const s = readVarStore(readFileSync(MS_VARS));
    const n = addUriBootOption(s, 'http://10.0.2.101/hfk.efi', 'hfk');
    const again = readVarStore(s.bytes);
    const option = getVariable(again, `Boot${n.toString(16).toUpperCase().padStart(4, '0')}`, EFI_GLOBAL_VARIABLE)!;
    expect(option.data.equals(uriLoadOption('http://10.0.2.101/hfk.efi', 'hfk'))).toBe(true);
    expect(option.data.readUInt32LE(0)).toBe(1); // active
    const path = option.data.subarray(6 + 'hfk\0'.length * 2);
    expect(path.readUInt16LE(4 - 2)).toBe(4 + 'http://10.0.2.101/hfk.efi'.length);
    expect([path[0], path[1]]).toEqual([3, 24]); // messaging, URI
    expect(path.subarray(-4).toString('hex')).toBe('7fff0400'); // end of the device path
    expect(getVariable(again, 'BootOrder', EFI_GLOBAL_VARIABLE)!.data.readUInt16LE(0)).toBe(n);
    const m = addUriBootOption(s, 'http://10.0.2.101/other.efi', 'other');
    expect(m).not.toBe(n);
    const order = getVariable(readVarStore(s.bytes), 'BootOrder', EFI_GLOBAL_VARIABLE)!.data;
    expect([order.readUInt16LE(0), order.readUInt16LE(2)]).toEqual([m, n]);
  });

  it('refuses to write past the end of the store', () => {
    const s = readVarStore(readFileSync(BLANK_VARS));
    expect(() => setVariable(s, { name: 'Big', guid: EFI_GLOBAL_VARIABLE, attributes: 7, data: Buffer.alloc(s.end - s.free) })).toThrow(/variable store full: Big needs \d+ bytes/);
  });
});
