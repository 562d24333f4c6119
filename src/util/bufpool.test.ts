import { describe, expect, it } from 'vitest';
import { SizedBufferPool } from './bufpool.ts';

describe('SizedBufferPool', () => {
  it('hands the same memory out again for the same rounded size, never twice at once', () => {
    const p = new SizedBufferPool({ granule: 4096 });
    const a = p.get(5000);
    expect(a.length).toBe(5000);
    expect(a.buffer.byteLength).toBe(8192);
    const b = p.get(6000); // same class, but a is still out
    expect(b.buffer).not.toBe(a.buffer);
    p.put(a);
    p.put(a); // a second put of the same memory is ignored
    expect(p.idleBytes).toBe(8192);
    const c = p.get(8000);
    expect(c.buffer).toBe(a.buffer);
    const d = p.get(8100);
    expect(d.buffer).not.toBe(a.buffer); // handed out once only
    expect(p.get(100).buffer.byteLength).toBe(4096); // another class
    expect(p.made).toBe(4 * 8192 - 8192 + 4096);
  });

  it('ignores memory it did not hand out and keeps at most maxFreeBytes idle', () => {
    const p = new SizedBufferPool({ granule: 1024, maxFreeBytes: 2048 });
    p.put(Buffer.alloc(1024));
    p.put(new Uint8Array(1024));
    expect(p.idleBytes).toBe(0);
    const bufs = [p.get(1024), p.get(1024), p.get(1024)];
    for (const b of bufs) p.put(b);
    expect(p.idleBytes).toBe(2048);
  });

  it('shared: memory another thread can read and write in place', () => {
    const p = new SizedBufferPool({ shared: true });
    const b = p.get(10);
    expect(b.buffer).toBeInstanceOf(SharedArrayBuffer);
    expect(new SizedBufferPool().get(10).buffer).toBeInstanceOf(ArrayBuffer);
  });
});
