import { describe, expect, it } from 'vitest';
import { FuseProtocolError } from './errors.ts';
import { readerEnd } from './session.ts';

describe('how a session ends, from how its /dev/fuse reader stopped', () => {
  it('a connection gone (ENODEV, or ECONNABORTED when the kernel marked it aborted) is an unmount', () => {
    expect(readerEnd({ end: true, code: 'ENODEV', message: 'no such device' })).toEqual({ reason: 'unmounted' });
    expect(readerEnd({ end: true, code: 'ECONNABORTED', message: 'software caused connection abort' })).toEqual({ reason: 'unmounted' });
  });

  it('stop() is a stop; anything else is a failure that says what the read said', () => {
    expect(readerEnd({ end: true, code: 'STOPPED', message: 'the session was stopped' })).toEqual({ reason: 'stopped' });
    const failed = readerEnd({ end: true, code: 'EIO', message: 'EIO: i/o error, read' });
    expect(failed.reason).toBe('failed');
    expect(failed.error).toBeInstanceOf(FuseProtocolError);
    expect(failed.error!.message).toBe('reading /dev/fuse failed: EIO: i/o error, read');
    expect(readerEnd({ end: true, code: undefined, message: 'end of file on /dev/fuse' }).reason).toBe('failed');
  });
});
