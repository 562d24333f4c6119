import { describe, expect, test } from 'vitest';
import { CmdlineError, type IpConfig, netmaskToPrefix, parseCmdline, parseIp, resolveBootSettings, splitCmdline } from './cmdline.ts';
import { defaultConfig, parseConfig } from './config.ts';
import { STAGES } from './stages.ts';

const KEY = 'A'.repeat(42) + 'E=';

describe('splitCmdline follows the kernel quoting rules', () => {
  const table: [string, [string, string | undefined][], string[]][] = [
    ['', [], []],
    ['   \n', [], []],
    ['quiet', [['quiet', undefined]], []],
    ['root=/dev/vda1 ro\n', [['root', '/dev/vda1'], ['ro', undefined]], []],
    ['  a=1 \t b=2  ', [['a', '1'], ['b', '2']], []],
    ['a=b=c', [['a', 'b=c']], []],
    ['a=', [['a', '']], []],
    ['=x', [['', 'x']], []],
    ['hfk.cache="LABEL=my cache" x', [['hfk.cache', 'LABEL=my cache'], ['x', undefined]], []],
    ['"hfk.cache=LABEL=my cache" x', [['hfk.cache', 'LABEL=my cache'], ['x', undefined]], []],
    ['"two words"', [['two words', undefined]], []],
    ['a=x"y z"w next', [['a', 'x"y z"w'], ['next', undefined]], []],
    ['a="unterminated value', [['a', 'unterminated value']], []],
    ['a="" b', [['a', ''], ['b', undefined]], []],
    ['""', [], []],
    ['quiet -- single x=1 "a b"', [['quiet', undefined]], ['single', 'x=1', 'a b']],
    ['quiet -- y="q r"', [['quiet', undefined]], ['y=q r']],
    ['a --', [['a', undefined]], []],
    ['a --x b', [['a', undefined], ['--x', undefined], ['b', undefined]], []],
    ['BOOT_IMAGE=/vmlinuz-6.1.0 root=UUID=1234', [['BOOT_IMAGE', '/vmlinuz-6.1.0'], ['root', 'UUID=1234']], []],
  ];
  test.each(table)('%j', (text, params, initArgs) => {
    const r = splitCmdline(text);
    expect(r.params.map((p) => [p.key, p.value])).toEqual(params);
    expect(r.initArgs).toEqual(initArgs);
  });
});

test("a real command line (a Firecracker VM's): init's arguments after --", () => {
  const text =
    'mitigations=auto,no_guest_host console=ttyS0 quiet reboot=k panic=1 nomodule page_reporting.page_reporting_order=11 rdinit=/process_api ' +
    '-- --firecracker-init --addr 0.0.0.0:2024 --max-ws-buffer-size 32768 --auth-required\n';
  const r = parseCmdline(text);
  expect(r.params).toEqual({ console: ['ttyS0'] });
  expect(r.initArgs).toEqual(['--firecracker-init', '--addr', '0.0.0.0:2024', '--max-ws-buffer-size', '32768', '--auth-required']);
  expect(r.all.map((p) => p.key)).toEqual(['mitigations', 'console', 'quiet', 'reboot', 'panic', 'nomodule', 'page_reporting.page_reporting_order', 'rdinit']);
});

describe('parseIp (kernel ip= syntax)', () => {
  const ok: [string, IpConfig][] = [
    ['dhcp', { mode: 'dhcp', dns: [] }],
    ['on', { mode: 'dhcp', dns: [] }],
    ['any', { mode: 'dhcp', dns: [] }],
    ['off', { mode: 'none' }],
    ['none', { mode: 'none' }],
    [':::::eth0:dhcp', { mode: 'dhcp', device: 'eth0', dns: [] }],
    ['::::box:eth1::', { mode: 'dhcp', device: 'eth1', hostname: 'box', dns: [] }],
    ['::::::off', { mode: 'none' }],
    [':::::eth0:off', { mode: 'none' }],
    [
      '10.0.2.15::10.0.2.2:255.255.255.0::eth0:off:10.0.2.3',
      { mode: 'static', address: '10.0.2.15', prefix: 24, netmask: '255.255.255.0', gateway: '10.0.2.2', device: 'eth0', dns: ['10.0.2.3'] },
    ],
    [
      '192.168.1.9:192.168.1.1:192.168.1.1:255.255.0.0:host:enp0s3:none:1.1.1.1:9.9.9.9:192.168.1.2',
      {
        mode: 'static', address: '192.168.1.9', prefix: 16, netmask: '255.255.0.0', gateway: '192.168.1.1', server: '192.168.1.1',
        ntp: '192.168.1.2', device: 'enp0s3', hostname: 'host', dns: ['1.1.1.1', '9.9.9.9'],
      },
    ],
    // no autoconf field and a client address: static, classful netmask
    ['10.1.2.3', { mode: 'static', address: '10.1.2.3', prefix: 8, netmask: '255.0.0.0', dns: [] }],
    ['10.1.2.3:::', { mode: 'static', address: '10.1.2.3', prefix: 8, netmask: '255.0.0.0', dns: [] }],
    ['172.16.0.5::172.16.0.1', { mode: 'static', address: '172.16.0.5', prefix: 16, netmask: '255.255.0.0', gateway: '172.16.0.1', dns: [] }],
    ['192.0.2.7::0.0.0.0:255.255.255.128', { mode: 'static', address: '192.0.2.7', prefix: 25, netmask: '255.255.255.128', dns: [] }],
    // a client address with dhcp: DHCP (the kernel asks the server)
    ['10.0.0.5::::::dhcp', { mode: 'dhcp', dns: [] }],
  ];
  test.each(ok)('%s', (text, expected) => {
    expect(parseIp(text)).toEqual({ ok: true, value: expected });
  });

  const bad: [string, RegExp][] = [
    ['', /is not dhcp, on, any, off, none/],
    ['auto', /is not dhcp/],
    ['bootp', /BOOTP\/RARP.*ip=dhcp/],
    ['eth0:dhcp', /dracut's form; the kernel's is ip=:::::eth0:dhcp/],
    ['10.0.2.300::::::off', /client address '10.0.2.300' that is not an IPv4/],
    ['10.0.2.15:::255.0.255.0::eth0:off', /netmask '255.0.255.0'/],
    ['10.0.2.15::::::static', /autoconf 'static': expected dhcp, on, any, off or none/],
    ['10.0.2.15::::::rarp', /rarp, which hfk-init does not speak/],
    ['::10.0.0.1::::off', /turns autoconfiguration off but gives no client address/],
    ['1:2:3:4:5:6:7:8:9:10:11', /more than the 10 fields/],
    ['10.0.2.15:::::bad/name:off', /device 'bad\/name'/],
    ['10.0.2.15::::a_b::off', /hostname 'a_b'/],
  ];
  test.each(bad)('%j is refused', (text, message) => {
    const r = parseIp(text);
    expect(r.ok).toBe(false);
    if (!r.ok) expect(r.problem).toMatch(message);
  });

  test.each([
    ['255.255.255.255', 32], ['255.255.255.0', 24], ['255.255.128.0', 17], ['0.0.0.0', 0], ['255.0.255.0', undefined], ['x', undefined],
  ] as const)('netmaskToPrefix(%s) = %s', (mask, prefix) => {
    expect(netmaskToPrefix(mask)).toBe(prefix);
  });
});

describe('parseCmdline', () => {
  test('a full command line', () => {
    const r = parseCmdline(
      `BOOT_IMAGE=/vmlinuz root=/dev/ram0 console=tty0 console=ttyS0,115200 hfk.mirrors=http://10.0.2.2:8080/hfk,https://m.example.org/a/b/ ` +
        `hfk.mirrors=http://third/ hfk.image=debian-12@7 hfk.key=${KEY} hfk.proxy=http://proxy:3128 hfk.cache=/dev/vdb ` +
        `hfk.overlay="LABEL=my overlay" ip=:::::eth0:dhcp hfk.break=network hfk.debug hfk.timeout=90 quiet -- single`,
    );
    expect(r.params).toEqual({
      mirrors: ['http://10.0.2.2:8080/hfk/', 'https://m.example.org/a/b/', 'http://third/'],
      image: { name: 'debian-12', version: 7 },
      key: KEY,
      proxy: 'http://proxy:3128',
      cache: { kind: 'device', path: '/dev/vdb' },
      overlay: { kind: 'label', label: 'my overlay' },
      ip: { mode: 'dhcp', device: 'eth0', dns: [] },
      break: 'network',
      debug: true,
      timeout: 90,
      console: ['tty0', 'ttyS0,115200'],
    });
    expect(r.warnings).toEqual([]);
    expect(r.initArgs).toEqual(['single']);
  });

  const ok: [string, object][] = [
    ['', { console: [] }],
    ['quiet splash', { console: [] }],
    ['hfk.image=debian', { image: { name: 'debian' }, console: [] }],
    ['hfk.mirrorlist=https://x.example/list.txt?v=2', { mirrorlist: 'https://x.example/list.txt?v=2', console: [] }],
    ['hfk.mirrorlist=/etc/hfk/mirrors.list', { mirrorlist: '/etc/hfk/mirrors.list', console: [] }],
    ['hfk.key=/etc/hfk/hfk.pub', { key: '/etc/hfk/hfk.pub', console: [] }],
    ['"hfk.key=hfk-ed25519 ' + KEY + ' me"', { key: `hfk-ed25519 ${KEY} me`, console: [] }],
    ['hfk.cache=tmpfs', { cache: { kind: 'tmpfs' }, console: [] }],
    ['hfk.cache=UUID=0A1B-2C3D', { cache: { kind: 'uuid', uuid: '0a1b-2c3d' }, console: [] }],
    ['hfk.overlay=UUID=3f1e2d4c-5b6a-4789-9abc-def012345678', { overlay: { kind: 'uuid', uuid: '3f1e2d4c-5b6a-4789-9abc-def012345678' }, console: [] }],
    ['hfk.debug=0', { debug: false, console: [] }],
    ['hfk.debug=yes', { debug: true, console: [] }],
    ['hfk.mirrors=http://a/,', { mirrors: ['http://a/'], console: [] }],
    ['ip=off', { ip: { mode: 'none' }, console: [] }],
    ['hfk.timeout=1', { timeout: 1, console: [] }],
  ];
  test.each(ok)('%j', (text, params) => {
    expect(parseCmdline(text).params).toEqual(params);
  });

  test('every stage can be a break point', () => {
    for (const s of STAGES) expect(parseCmdline(`hfk.break=${s}`).params.break).toBe(s);
  });

  const bad: [string, string, string][] = [
    ['hfk.mirrors=ftp://x', 'hfk.mirrors', "hfk.mirrors: 'ftp://x' is not an http:// or https:// URL"],
    ['hfk.mirrors=http://ok/,notaurl', 'hfk.mirrors', "hfk.mirrors: 'notaurl' is not an http:// or https:// URL"],
    ['hfk.mirrors=http://a/?x=1', 'hfk.mirrors', "hfk.mirrors: 'http://a/?x=1' is a URL with a query"],
    ['hfk.mirrors=,', 'hfk.mirrors', "hfk.mirrors: '' lists no URL"],
    ['hfk.mirrors', 'hfk.mirrors', 'hfk.mirrors needs a value, like hfk.mirrors=http://'],
    ['hfk.mirrorlist=mirrors.txt', 'hfk.mirrorlist', "hfk.mirrorlist: 'mirrors.txt' is not an absolute path"],
    ['hfk.mirrorlist=ftp://x/list', 'hfk.mirrorlist', "hfk.mirrorlist: 'ftp://x/list' is not an http:// or https:// URL (nor a file path)"],
    ['hfk.image=-bad', 'hfk.image', "hfk.image: '-bad' is not NAME or NAME@VERSION"],
    ['hfk.image=debian@0', 'hfk.image', "hfk.image: 'debian@0' is not NAME or NAME@VERSION"],
    ['hfk.key=AAAAAAAAAAAAAAAAAAAAAAAA', 'hfk.key', "hfk.key: 'AAAAAAAAAAAAAAAAAAAAAAAA' is not an Ed25519 public key"],
    ['hfk.key=keys/hfk.pub', 'hfk.key', "hfk.key: 'keys/hfk.pub' is not an absolute path"],
    ['hfk.proxy=socks5://p:1080', 'hfk.proxy', "hfk.proxy: 'socks5://p:1080' is not an http:// or https:// proxy URL"],
    ['hfk.cache=/mnt/x', 'hfk.cache', "hfk.cache: '/mnt/x' is not 'tmpfs', a /dev/… path, LABEL=… or UUID=…"],
    ['hfk.cache=/dev/', 'hfk.cache', "hfk.cache: '/dev/' is not a device path under /dev/"],
    ['hfk.overlay=UUID=xyz', 'hfk.overlay', "hfk.overlay: 'UUID=xyz' has a UUID that is not 8-4-4-4-12 hex digits"],
    ['hfk.overlay=LABEL=', 'hfk.overlay', "hfk.overlay: 'LABEL=' has an empty label"],
    ['hfk.break=boot', 'hfk.break', "hfk.break: 'boot' is not a stage: the stages are early, config, probe, network"],
    ['hfk.timeout=0', 'hfk.timeout', "hfk.timeout: '0' is not a whole number of seconds from 1 to 86400"],
    ['hfk.timeout=1.5', 'hfk.timeout', "hfk.timeout: '1.5' is not a whole number of seconds"],
    ['hfk.debug=maybe', 'hfk.debug', "hfk.debug: 'maybe' is not a flag"],
    ['ip=eth0:dhcp', 'ip', "ip: 'eth0:dhcp' is dracut's form; the kernel's is ip=:::::eth0:dhcp"],
    ['ip', 'ip', 'ip needs a value'],
  ];
  test.each(bad)('%j is refused', (text, key, message) => {
    let err: unknown;
    try {
      parseCmdline(text);
    } catch (e) {
      err = e;
    }
    expect(err).toBeInstanceOf(CmdlineError);
    const e = err as CmdlineError;
    expect(e.code).toBe('E_CMDLINE');
    expect(e.key).toBe(key);
    expect(e.message).toContain(message);
    expect(e.hint).toMatch(/^for example /);
  });

  test('every bad parameter is named, not only the first', () => {
    expect(() => parseCmdline('hfk.mirrors=ftp://x hfk.timeout=never')).toThrow(
      /hfk\.mirrors: 'ftp:\/\/x' is not an http:\/\/ or https:\/\/ URL\nhfk\.timeout: 'never' is not a whole number/,
    );
  });

  test('unknown hfk keys and repeats are warnings, other kernel parameters are ignored', () => {
    const r = parseCmdline('hfk.mirror=http://a/ hfk.frobnicate=1 hfk.image=a hfk.image=b root=/dev/sda1 console');
    expect(r.params.image).toEqual({ name: 'b' });
    expect(r.warnings).toEqual([
      'unknown parameter hfk.mirror ignored; did you mean hfk.mirrors?',
      expect.stringMatching(/^unknown parameter hfk\.frobnicate ignored; hfk reads hfk\.mirrors, hfk\.mirrorlist, /),
      "hfk.image is given more than once; using the last, 'b'",
      'console without a value ignored',
    ]);
  });
});

describe('resolveBootSettings: the command line wins over the config', () => {
  const config = parseConfig(
    ['image: debian@3', 'mirrors: [http://baked/]', 'key: /etc/hfk/hfk.pub', 'init:', '  cache: LABEL=c', '  timeout: 45', '  modules: [e1000e]', '  break: fuse'].join('\n'),
    '/etc/hfk/hfk.yaml',
  );

  test('config values when the command line is silent', () => {
    const s = resolveBootSettings(parseCmdline('quiet'), config);
    expect(s).toMatchObject({
      image: { name: 'debian', version: 3 },
      mirrors: ['http://baked/'],
      mirrorlist: undefined,
      key: '/etc/hfk/hfk.pub',
      cache: { kind: 'label', label: 'c' },
      overlay: { kind: 'tmpfs' },
      ip: { mode: 'dhcp', dns: [] },
      break: 'fuse',
      timeout: 45,
      modules: ['e1000e'],
      debug: false,
    });
    expect(s.origin).toEqual({
      image: 'config', mirrors: 'config', key: 'config', proxy: 'default', cache: 'config', overlay: 'config', ip: 'default', break: 'config', timeout: 'config',
    });
  });

  test('command line values replace the config', () => {
    const s = resolveBootSettings(
      parseCmdline(`hfk.image=ubuntu hfk.mirrorlist=http://list/m.txt hfk.cache=tmpfs hfk.timeout=5 hfk.break=early ip=off hfk.key=${KEY} -- x`),
      config,
    );
    expect(s).toMatchObject({
      image: { name: 'ubuntu' },
      mirrors: [],
      mirrorlist: 'http://list/m.txt',
      key: KEY,
      cache: { kind: 'tmpfs' },
      timeout: 5,
      break: 'early',
      ip: { mode: 'none' },
      initArgs: ['x'],
    });
    expect(s.origin).toMatchObject({ image: 'cmdline', mirrors: 'cmdline', cache: 'cmdline', timeout: 'cmdline', ip: 'cmdline' });
  });

  test('no image or no mirror anywhere is an error that says where to set it', () => {
    expect(() => resolveBootSettings(parseCmdline('hfk.mirrors=http://a/'), defaultConfig())).toThrow(
      expect.objectContaining({ code: 'E_CMDLINE', message: 'hfk.image is not set: hfk-init does not know which image to boot', hint: expect.stringContaining('image: NAME to /etc/hfk/hfk.yaml') }),
    );
    expect(() => resolveBootSettings(parseCmdline('hfk.image=a'), defaultConfig())).toThrow(/hfk\.mirrors is not set/);
  });
});
