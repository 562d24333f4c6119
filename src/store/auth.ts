// Credentials for private mirrors: user info in a mirror's URL
// (http://user:pass@host/path/) or a netrc entry for its host, sent as HTTP
// Basic auth to that mirror's origin only (never to a redirect's other
// origin). The credentials leave the URL before it becomes a mirror's name,
// so logs, errors, rankings and reports never see them; redactUrl covers
// the places that print a URL as the user gave it.

import { netrcLogin, type NetrcEntry } from './netrc.ts';

/**
 * A URL (or text holding URLs) with the password of each `scheme://user:pass@`
 * replaced by ***: http://user:***@host/. Text that is not a URL is
 * returned with the same replacement.
 */
export function redactUrl(text: string): string {
  return text.replace(/([a-z][a-z0-9+.-]*:\/\/)([^/?#\s@]*)@/gi, (_m, scheme: string, info: string) => {
    const colon = info.indexOf(':');
    return `${scheme}${colon < 0 ? info : `${info.slice(0, colon)}:***`}@`;
  });
}

/** A URL without its user info, and the Basic credentials that were in it. */
export function splitCredentials(url: string): { url: string; user?: string; password?: string } {
  if (!/^https?:\/\//i.test(url)) return { url };
  const u = new URL(url);
  if (!u.username && !u.password) return { url };
  const user = decodeURIComponent(u.username);
  const password = u.password ? decodeURIComponent(u.password) : undefined;
  u.username = '';
  u.password = '';
  return { url: u.href, user, ...(password !== undefined ? { password } : {}) };
}

/** The Authorization header value for a login. */
export function basicAuth(user: string, password: string): string {
  return `Basic ${Buffer.from(`${user}:${password}`, 'utf8').toString('base64')}`;
}

/**
 * Where the credentials of one mirror URL come from: its user info, else
 * (or for a user without a password) the netrc entry for its host. Returns
 * the URL without credentials and the Authorization header, if any.
 */
export function mirrorAuth(url: string, netrc: readonly NetrcEntry[] = []): { url: string; authorization?: string } {
  const c = splitCredentials(url);
  if (!/^https?:\/\//i.test(c.url)) return { url: c.url };
  if (c.user !== undefined && c.password !== undefined) return { url: c.url, authorization: basicAuth(c.user, c.password) };
  const entry = netrcLogin(netrc, new URL(c.url).hostname, c.user);
  if (entry?.password !== undefined) return { url: c.url, authorization: basicAuth(entry.login ?? c.user ?? '', entry.password) };
  if (c.user !== undefined) return { url: c.url, authorization: basicAuth(c.user, '') };
  return { url: c.url };
}
