import { mkdtempSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import fc from 'fast-check';
import { describe, expect, it } from 'vitest';
import { InputError } from '../errors.ts';
import { loadNetrc, netrcLogin, parseNetrc } from './netrc.ts';

describe('parseNetrc', () => {
  it('reads machine, login, password and default entries, on one line or many', () => {
    const text = `# private mirrors
machine mirror.example.org login alice password s3cret
machine Other.Example
  login bob
  account ignored
  password "with space \\" quote"
default login anon password guest
`;
    expect(parseNetrc(text)).toEqual([
      { machine: 'mirror.example.org', login: 'alice', password: 's3cret' },
      { machine: 'other.example', login: 'bob', password: 'with space " quote' },
      { login: 'anon', password: 'guest' },
    ]);
  });

  it('skips a macdef body up to its blank line', () => {
    expect(parseNetrc('macdef init\ncd /pub\nmachine fake login x password y\n\nmachine real login u password p\n')).toEqual([{ machine: 'real', login: 'u', password: 'p' }]);
  });

  it('any text parses without throwing, and tokens round-trip', () => {
    fc.assert(fc.property(fc.string(), (s) => void parseNetrc(s)));
    const word = fc.stringMatching(/^[A-Za-z0-9._!@$%^&*-]{1,20}$/).filter((w) => !['machine', 'default', 'login', 'password', 'account', 'macdef'].includes(w) && !w.startsWith('#'));
    fc.assert(
      fc.property(fc.array(fc.tuple(word, word, word), { maxLength: 5 }), (rows) => {
        const text = rows.map(([m, l, p]) => `machine ${m} login ${l} password ${p}`).join('\n');
        expect(parseNetrc(text)).toEqual(rows.map(([m, l, p]) => ({ machine: m.toLowerCase(), login: l, password: p })));
      }),
    );
  });
});

describe('netrcLogin', () => {
  const entries = parseNetrc('machine a.test login u1 password p1\nmachine a.test login u2 password p2\ndefault login d password dp\n');
  it('the first entry for the host, else default', () => {
    expect(netrcLogin(entries, 'A.test')).toEqual({ machine: 'a.test', login: 'u1', password: 'p1' });
    expect(netrcLogin(entries, 'b.test')).toEqual({ login: 'd', password: 'dp' });
    expect(netrcLogin(parseNetrc('machine a.test login u password p'), 'b.test')).toBeUndefined();
  });
  it('the entry for the user the URL names', () => {
    expect(netrcLogin(entries, 'a.test', 'u2')?.password).toBe('p2');
    expect(netrcLogin(entries, 'a.test', 'nobody')).toBeUndefined();
  });
});

describe('loadNetrc', () => {
  it('a missing optional file is no entries; a missing named one an error naming it', () => {
    const dir = mkdtempSync(join(tmpdir(), 'hfk-netrc-'));
    try {
      expect(loadNetrc(join(dir, 'none'), { optional: true })).toEqual([]);
      expect(() => loadNetrc(join(dir, 'none'))).toThrow(InputError);
      expect(() => loadNetrc(join(dir, 'none'))).toThrow(`the netrc file ${join(dir, 'none')} does not exist`);
      writeFileSync(join(dir, 'netrc'), 'machine h login u password p\n');
      expect(loadNetrc(join(dir, 'netrc'))).toEqual([{ machine: 'h', login: 'u', password: 'p' }]);
    } finally {
      rmSync(dir, { recursive: true, force: true });
    }
  });
});
