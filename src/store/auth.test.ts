import { describe, expect, it } from 'vitest';
import { basicAuth, mirrorAuth, redactUrl, splitCredentials } from './auth.ts';
import { parseNetrc } from './netrc.ts';

describe('redactUrl', () => {
  it.each([
    ['http://user:pass@host/hfk/', 'http://user:***@host/hfk/'],
    ['https://u%40x:p%3Aq@h:8443/', 'https://u%40x:***@h:8443/'],
    ['http://onlyuser@host/', 'http://onlyuser@host/'],
    ['http://host/a@b', 'http://host/a@b'],
    ['mirrors http://a:1@x/ and https://b:2@y/ failed', 'mirrors http://a:***@x/ and https://b:***@y/ failed'],
    ['/srv/hfk/store', '/srv/hfk/store'],
  ])('%s → %s', (text, want) => {
    expect(redactUrl(text)).toBe(want);
  });
});

describe('splitCredentials and mirrorAuth', () => {
  it('takes user info out of the URL', () => {
    expect(splitCredentials('http://al%20ice:p%40ss@h/hfk/')).toEqual({ url: 'http://h/hfk/', user: 'al ice', password: 'p@ss' });
    expect(splitCredentials('http://h/hfk/')).toEqual({ url: 'http://h/hfk/' });
    expect(splitCredentials('/srv/store')).toEqual({ url: '/srv/store' });
  });

  it('URL credentials first, then netrc for the host, then nothing', () => {
    const netrc = parseNetrc('machine h login n password np\nmachine h login alice password ap\n');
    expect(mirrorAuth('http://u:p@h/x/', netrc)).toEqual({ url: 'http://h/x/', authorization: basicAuth('u', 'p') });
    expect(mirrorAuth('http://h/x/', netrc)).toEqual({ url: 'http://h/x/', authorization: basicAuth('n', 'np') });
    expect(mirrorAuth('http://alice@h/x/', netrc)).toEqual({ url: 'http://h/x/', authorization: basicAuth('alice', 'ap') });
    expect(mirrorAuth('http://other/x/', netrc)).toEqual({ url: 'http://other/x/' });
  });

  it('Basic credentials are base64 of user:password', () => {
    expect(basicAuth('Aladdin', 'open sesame')).toBe('Basic QWxhZGRpbjpvcGVuIHNlc2FtZQ==');
  });
});
