import { describe, expect, it } from 'vitest';
import { MemoryCache } from './memcache.ts';

describe('MemoryCache', () => {
  it('evicts the least recently used blocks to stay under its byte limit', () => {
    const c = new MemoryCache(300);
    c.set('a', Buffer.alloc(100));
    c.set('b', Buffer.alloc(100));
    c.set('c', Buffer.alloc(100));
    expect(c.get('a')).toBeDefined(); // a is now the most recent
    c.set('d', Buffer.alloc(100)); // evicts b
    expect(c.has('b')).toBe(false);
    expect(['a', 'c', 'd'].every((k) => c.has(k))).toBe(true);
    expect(c.size).toBe(300);
    c.set('big', Buffer.alloc(250)); // evicts until it fits
    expect(c.size).toBeLessThanOrEqual(300);
    expect(c.has('big')).toBe(true);
  });

  it('ignores a block larger than the whole cache and counts hits and misses', () => {
    const c = new MemoryCache(10);
    c.set('x', Buffer.alloc(11));
    expect(c.get('x')).toBeUndefined();
    c.set('y', Buffer.alloc(5));
    c.get('y');
    expect([c.hits, c.misses]).toEqual([1, 1]);
  });

  it('replacing a key does not double count', () => {
    const c = new MemoryCache(100);
    c.set('k', Buffer.alloc(60));
    c.set('k', Buffer.alloc(40));
    expect(c.size).toBe(40);
    expect(c.count).toBe(1);
  });
});
