import { describe, expect, it } from 'vitest';
import { UsageError } from '../errors.ts';
import { bypassesProxy, proxyFor, proxyFromEnv, resolveProxy, splitNoProxy } from './proxy.ts';

describe('bypassesProxy: no_proxy entries as curl reads them', () => {
  it.each([
    // [host, port, no_proxy, direct?]
    ['example.org', 80, 'example.org', true],
    ['mirror.example.org', 80, 'example.org', true],
    ['mirror.example.org', 80, '.example.org', true],
    ['example.org', 80, '.example.org', true],
    ['badexample.org', 80, 'example.org', false],
    ['example.org.evil', 80, 'example.org', false],
    ['MIRROR.Example.ORG.', 80, 'example.org', true],
    ['anything', 443, '*', true],
    ['anything', 443, 'x.test, *', true],
    ['example.org', 8080, 'example.org:8080', true],
    ['example.org', 80, 'example.org:8080', false],
    ['127.0.0.1', 80, 'localhost,127.0.0.1', true],
    ['127.0.0.2', 80, '127.0.0.1', false],
    ['10.1.2.3', 80, '10.0.0.0/8', true],
    ['11.1.2.3', 80, '10.0.0.0/8', false],
    ['192.168.1.200', 80, '192.168.1.128/25', true],
    ['192.168.1.100', 80, '192.168.1.128/25', false],
    ['[::1]', 80, '::1', true],
    ['::1', 80, '[::1]:80', true],
    ['::1', 81, '[::1]:80', false],
    ['fd00::5', 80, 'fd00::/8', true],
    ['fe80::5', 80, 'fd00::/8', false],
    ['1.2.3.4', 80, '2.3.4', false], // an IP is not a domain suffix
    ['example.org', 80, '', false],
  ])('%s:%d with no_proxy=%j → direct %s', (host, port, list, direct) => {
    expect(bypassesProxy(host, port, splitNoProxy(list))).toBe(direct);
  });

  it('splits on commas and spaces', () => {
    expect(splitNoProxy(' a.test,b.test  c.test,, ')).toEqual(['a.test', 'b.test', 'c.test']);
  });
});

describe('proxyFor', () => {
  const rules = { http: 'http://p:3128/', https: 'http://s:3128/', noProxy: ['local.test'] };
  it('picks the proxy of the scheme, or none for no_proxy hosts', () => {
    expect(proxyFor('http://m.example/hfk/', rules)).toBe('http://p:3128/');
    expect(proxyFor('https://m.example/hfk/', rules)).toBe('http://s:3128/');
    expect(proxyFor('http://a.local.test/hfk/', rules)).toBeUndefined();
    expect(proxyFor('https://m.example/', { http: 'http://p:3128/' })).toBeUndefined();
  });
  it('a single proxy carries everything', () => {
    expect(proxyFor('https://m.example/', 'http://p:1/')).toBe('http://p:1/');
    expect(proxyFor('https://m.example/', undefined)).toBeUndefined();
  });
});

describe('proxyFromEnv: the environment → proxy rules, as curl', () => {
  it('lower-case http_proxy only; HTTP_PROXY is ignored (CGI)', () => {
    expect(proxyFromEnv({ HTTP_PROXY: 'http://evil:1' })).toEqual({});
    expect(proxyFromEnv({ http_proxy: 'http://p:3128' })).toEqual({ http: 'http://p:3128/' });
  });
  it('https_proxy or HTTPS_PROXY; all_proxy or ALL_PROXY fills a scheme without its own', () => {
    expect(proxyFromEnv({ HTTPS_PROXY: 'http://s:1' })).toEqual({ https: 'http://s:1/' });
    expect(proxyFromEnv({ https_proxy: 'http://a:1', HTTPS_PROXY: 'http://b:1' })).toEqual({ https: 'http://a:1/' });
    expect(proxyFromEnv({ ALL_PROXY: 'http://all:1', http_proxy: 'http://h:1' })).toEqual({ http: 'http://h:1/', https: 'http://all:1/' });
  });
  it('no_proxy or NO_PROXY; empty variables are unset; HOST:PORT means http://', () => {
    expect(proxyFromEnv({ http_proxy: '', NO_PROXY: 'a.test, b.test' })).toEqual({ noProxy: ['a.test', 'b.test'] });
    expect(proxyFromEnv({ http_proxy: 'squid:3128' })).toEqual({ http: 'http://squid:3128/' });
  });
  it('a proxy hfk cannot speak to is an error naming the variable', () => {
    expect(() => proxyFromEnv({ all_proxy: 'socks5://s:1080' })).toThrow(UsageError);
    expect(() => proxyFromEnv({ all_proxy: 'socks5://s:1080' })).toThrow(/all_proxy variable is a socks5 proxy/);
  });
});

describe('resolveProxy: an explicit hfk proxy wins over the environment', () => {
  const env = { http: 'http://envp:1/', noProxy: ['x.test'] };
  it('explicit: one proxy for everything, the environment ignored', () => {
    expect(resolveProxy({ explicit: 'http://squid:3128', env })).toBe('http://squid:3128/');
    expect(resolveProxy({ explicit: 'http://squid:3128', noProxy: ['lan.test'], env })).toEqual({ http: 'http://squid:3128/', https: 'http://squid:3128/', noProxy: ['lan.test'] });
  });
  it("an explicit '' turns every proxy off", () => {
    expect(resolveProxy({ explicit: '', env })).toBeUndefined();
  });
  it('else the environment, with an explicit noProxy replacing no_proxy', () => {
    expect(resolveProxy({ env })).toEqual(env);
    expect(resolveProxy({ env, noProxy: ['y.test'] })).toEqual({ http: 'http://envp:1/', noProxy: ['y.test'] });
    expect(resolveProxy({ env: { noProxy: ['x'] } })).toBeUndefined();
  });
});
