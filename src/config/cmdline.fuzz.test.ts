// Property tests of the kernel command line parser: any text parses or
// fails with CmdlineError (never another error), and parameters written
// out plainly are split back exactly.

import fc from 'fast-check';
import { describe, expect, it } from 'vitest';
import { CmdlineError, parseCmdline, splitCmdline } from './cmdline.ts';

const piece = fc.constantFrom(
  'hfk.mirrors=', 'hfk.image=', 'hfk.key=', 'hfk.cache=', 'hfk.overlay=', 'hfk.timeout=', 'hfk.debug', 'hfk.break=', 'hfk.proxy=', 'hfk.mirorrs=',
  'ip=', 'console=', 'http://10.0.2.2:8080/hfk/', ',', 'tmpfs', 'dhcp', 'debian-12@7', '60', '-1', '"', '=', ' ', '\t', '\n', '--', ' -- ', 'quiet', 'root=/dev/sda1', '\u0000', 'é', '::::', 'off',
);
const text = fc.oneof(fc.array(piece, { maxLength: 30 }).map((a) => a.join('')), fc.string({ maxLength: 200 }), fc.string({ unit: 'binary', maxLength: 100 }));

describe('kernel command line parser (property)', () => {
  it('any text: parsed, or a CmdlineError naming a bad hfk parameter; never another error', { timeout: 30_000 }, () => {
    fc.assert(
      fc.property(text, (t) => {
        try {
          const r = parseCmdline(t);
          expect(Array.isArray(r.warnings)).toBe(true);
          expect(r.all).toEqual(splitCmdline(t).params);
        } catch (e) {
          expect(e).toBeInstanceOf(CmdlineError);
          const err = e as CmdlineError;
          expect(err.problems.length).toBeGreaterThan(0);
          expect(err.key === 'ip' || err.key === 'console' || err.key.startsWith('hfk.')).toBe(true);
        }
      }),
      { numRuns: 3000 },
    );
  });

  it('plain key=value words (and init arguments after --) split back exactly', { timeout: 30_000 }, () => {
    const key = fc.stringMatching(/^[a-z][a-z0-9_.]{0,12}$/).filter((k) => k !== '--');
    const value = fc.option(fc.stringMatching(/^[A-Za-z0-9_./:,@-]{0,20}$/), { nil: undefined });
    const arg = fc.stringMatching(/^[A-Za-z0-9_./:,@-]{1,12}$/);
    fc.assert(
      fc.property(fc.array(fc.tuple(key, value), { maxLength: 10 }), fc.option(fc.array(arg, { maxLength: 4 }), { nil: undefined }), fc.constantFrom(' ', '  ', '\t', '\n'), (params, init, sep) => {
        const words = params.map(([k, v]) => (v === undefined ? k : `${k}=${v}`));
        const line = [...words, ...(init ? ['--', ...init] : [])].join(sep);
        const got = splitCmdline(line);
        expect(got.params).toEqual(params.map(([k, v]) => ({ key: k, value: v })));
        expect(got.initArgs).toEqual(init ?? []);
      }),
      { numRuns: 1000 },
    );
  });
});
