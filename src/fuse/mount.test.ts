import { EventEmitter } from 'node:events';
import { describe, expect, it, vi } from 'vitest';
import { UsageError } from '../errors.ts';
import {
  buildMountArgs,
  buildForceUmountArgs,
  buildMountOptions,
  buildUmountArgs,
  findMount,
  fuseConnectionId,
  parseMountinfo,
  readAheadPath,
  unmountOnSignals,
} from './mount.ts';

describe('mount options', () => {
  it('builds the kernel option string with read-only defaults', () => {
    expect(buildMountOptions({ fd: 3 })).toBe(
      'fd=3,rootmode=40000,user_id=0,group_id=0,allow_other,default_permissions,max_read=1048576,ro',
    );
  });

  it('honours every option; rootmode is octal', () => {
    expect(
      buildMountOptions({
        fd: 7,
        rootMode: 0o40755,
        userId: 1000,
        groupId: 100,
        allowOther: false,
        defaultPermissions: false,
        maxRead: 131072,
        readOnly: false,
      }),
    ).toBe('fd=7,rootmode=40755,user_id=1000,group_id=100,max_read=131072');
  });

  it('refuses values the kernel would misread', () => {
    expect(() => buildMountOptions({ fd: -1 })).toThrow(UsageError);
    expect(() => buildMountOptions({ fd: 3, userId: 1.5 })).toThrow(/user_id must be an unsigned 32-bit integer: got 1.5/);
    expect(() => buildMountOptions({ fd: 3, maxRead: 100 })).toThrow(/max_read must be at least 4096: got 100/);
  });

  it('builds mount and umount argument lists', () => {
    expect(buildMountArgs({ mountpoint: '/run/hfk/a b', options: 'fd=3' })).toEqual(['-i', '-t', 'fuse.hfk', '-o', 'fd=3', 'hfk', '/run/hfk/a b']);
    expect(buildMountArgs({ mountpoint: '/m', options: 'x', source: 'hfk:debian', subtype: 'hfk_test' })).toEqual([
      '-i',
      '-t',
      'fuse.hfk_test',
      '-o',
      'x',
      'hfk:debian',
      '/m',
    ]);
    expect(() => buildMountArgs({ mountpoint: '/m', options: 'x', source: 'a,b c' })).toThrow(/mount source/);
    expect(() => buildMountArgs({ mountpoint: '/m', options: 'x', subtype: 'Hfk.x' })).toThrow(/subtype/);
    expect(() => buildMountArgs({ mountpoint: 'bad\nname', options: 'x' })).toThrow(/newlines/);
    expect(buildUmountArgs('/m')).toEqual(['/m']);
    expect(buildUmountArgs('/m', { lazy: true })).toEqual(['-l', '/m']);
    expect(buildForceUmountArgs('/m')).toEqual(['-f', '-l', '/m']);
  });
});

const MOUNTINFO = [
  '22 1 254:1 / / rw,relatime shared:1 - ext4 /dev/vda rw',
  '23 22 0:21 / /proc rw,nosuid,nodev,noexec,relatime shared:5 - proc proc rw',
  '41 22 0:38 / /tmp/with\\040space rw,relatime - fuse.hfk hfk ro,user_id=0,group_id=0,default_permissions,allow_other,max_read=1048576',
  '42 41 7:0 / /tmp/with\\040space/inner ro,relatime - squashfs /dev/loop0 ro',
  'garbage line',
  '43 22 0:39 / /tmp/x rw - tmpfs tmpfs rw',
  '44 22 0:40 / /tmp/x rw - tmpfs other rw',
  '',
].join('\n');

describe('mountinfo', () => {
  it('parses fields, unescapes paths, skips malformed lines', () => {
    const m = parseMountinfo(MOUNTINFO);
    expect(m.length).toBe(6);
    expect(m[2]).toEqual({
      mountId: 41,
      parentId: 22,
      major: 0,
      minor: 38,
      root: '/',
      mountpoint: '/tmp/with space',
      options: 'rw,relatime',
      fstype: 'fuse.hfk',
      source: 'hfk',
      superOptions: 'ro,user_id=0,group_id=0,default_permissions,allow_other,max_read=1048576',
    });
    expect(m[1]!.options).toBe('rw,nosuid,nodev,noexec,relatime'); // optional fields skipped
  });

  it('finds the topmost mount on a path', () => {
    const m = parseMountinfo(MOUNTINFO);
    expect(findMount(m, '/tmp/x')?.source).toBe('other');
    expect(findMount(m, '/tmp/with space')?.fstype).toBe('fuse.hfk');
    expect(findMount(m, '/tmp')).toBeUndefined();
  });

  it('names the connection and its readahead knob after the device number', () => {
    expect(fuseConnectionId({ major: 0, minor: 38 })).toBe(38);
    expect(fuseConnectionId({ major: 1, minor: 2 })).toBe(1048578);
    expect(readAheadPath({ major: 0, minor: 38 })).toBe('/sys/class/bdi/0:38/read_ahead_kb');
  });
});

describe('unmountOnSignals', () => {
  it('unmounts lazily on SIGTERM, then exits 143; once', async () => {
    const emitter = new EventEmitter();
    const unmount = vi.fn(() => Promise.resolve({ reason: 'unmounted' as const }));
    const exited = new Promise<number>((resolve) => {
      unmountOnSignals({ mountpoint: '/m', unmount }, { emitter, exit: resolve });
    });
    emitter.emit('SIGTERM', 'SIGTERM');
    emitter.emit('SIGINT', 'SIGINT');
    expect(await exited).toBe(143);
    expect(unmount).toHaveBeenCalledExactlyOnceWith({ lazy: true });
  });

  it('reports a failed unmount and still exits; the remover detaches the handlers', async () => {
    const emitter = new EventEmitter();
    const onError = vi.fn();
    const unmount = vi.fn(() => Promise.reject(new Error('busy')));
    const exited = new Promise<number>((resolve) => {
      unmountOnSignals({ mountpoint: '/m', unmount }, { emitter, exit: resolve, onError, signals: ['SIGINT'] });
    });
    emitter.emit('SIGINT', 'SIGINT');
    expect(await exited).toBe(130);
    expect(onError.mock.calls[0]![0].message).toBe('busy');

    const remove = unmountOnSignals({ mountpoint: '/m', unmount }, { emitter, exit: () => {} });
    expect(emitter.listenerCount('SIGTERM')).toBe(1);
    remove();
    expect(emitter.listenerCount('SIGTERM')).toBe(0);
  });
});
