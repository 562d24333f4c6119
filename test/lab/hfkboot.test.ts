import { describe, expect, it } from 'vitest';
import { shellOutput, withoutKernelMessages } from './hfkboot.ts';
import { ConsoleLog, type Vm } from './qemu.ts';

/** A guest shell on a ConsoleLog: each command typed gets the scripted console output back. */
function scriptedVm(replies: string[]): { vm: Vm; typed: string[] } {
  const con = new ConsoleLog('VM t');
  const typed: string[] = [];
  const vm = {
    waitFor: (p: string | RegExp, ms = 1000) => con.waitFor(p, ms),
    send: (text: string) => {
      typed.push(text);
      // The shell echoes the command line, then prints its output.
      setImmediate(() => con.append(`${text}${replies.shift() ?? ''}root@hfk-demo:~# `));
    },
  } as unknown as Vm;
  return { vm, typed };
}

describe('reading command output off the serial console', () => {
  it('drops kernel messages printed in between, and lowers the console log level first', async () => {
    // What broke the PXE boot test once: a kernel warning inside the boot report.
    const report = '{\n  "format": "hfk-boot-report/1",\n  "ok": true\n}';
    const { vm, typed } = scriptedVm([
      `BEGINOUT\r\n[   89.223860] hrtimer: interrupt took 11824032 ns\r\n${report}\r\n\r\nENDOUT\r\n`,
      'BEGINOUT\n{"a":1}\n[  120.5] second\n\nENDOUT\n',
    ]);
    expect(JSON.parse(await shellOutput(vm, 'cat /run/hfk/boot-report.json'))).toEqual({ format: 'hfk-boot-report/1', ok: true });
    expect(await shellOutput(vm, 'cat x')).toBe('{"a":1}');
    expect(typed[0]).toMatch(/^dmesg -n 1; echo BEGIN''OUT; cat \/run\/hfk\/boot-report\.json; echo; echo END''OUT\n$/);
  });

  it('keeps lines that only look a little like kernel messages', () => {
    expect(withoutKernelMessages('[x] not a timestamp\n  [ 1.5] indented\n[ 1.5] gone\nkept [ 2.0] mid-line\n')).toBe('[x] not a timestamp\n  [ 1.5] indented\nkept [ 2.0] mid-line\n');
  });
});
