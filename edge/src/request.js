// What a route reads from a request: the path it matches, headers, cookies and query,
// parsed the way the Python proxy (aiohttp) parses them.

/** The decoded path (aiohttp's request.path is percent-decoded); raw when undecodable. */
export function decodedPath(url) {
  try {
    return decodeURIComponent(url.pathname);
  } catch {
    return url.pathname;
  }
}

// RFC 6265 cookie-pairs; a quoted value is unquoted (as aiohttp does); a later
// duplicate wins (aiohttp builds a dict).
export function parseCookies(header) {
  const out = new Map();
  if (!header) return out;
  for (const part of header.split(";")) {
    const eq = part.indexOf("=");
    if (eq < 0) continue;
    const name = part.slice(0, eq).trim();
    if (!name) continue;
    let value = part.slice(eq + 1).trim();
    if (value.length >= 2 && value.startsWith('"') && value.endsWith('"')) {
      value = value.slice(1, -1).replace(/\\(.)/g, "$1");
    }
    out.set(name, value);
  }
  return out;
}

/** Headers, cookies and query of one request, each a `get(name)` view. */
export class RequestView {
  constructor(request, url) {
    this.headers = request.headers;
    this.query = url.searchParams;
    this._cookieHeader = request.headers.get("Cookie");
    this._cookies = null;
  }

  get cookies() {
    this._cookies ??= parseCookies(this._cookieHeader);
    return this._cookies;
  }

  get(kind, name) {
    const source = kind === "cookie" ? this.cookies : kind === "header" ? this.headers : this.query;
    const value = source.get(name);
    return value === undefined ? null : value;
  }
}

export const MAX_USER_ID = 256; // proxy/users.py: longer values are not ids

/** The first present, non-blank source wins (proxy/users.py resolve_user). */
export function resolveUser(sources, view) {
  for (const [kind, name] of sources) {
    let value = view.get(kind, name);
    if (value) {
      value = value.trim();
      // Python counts code points, not UTF-16 units.
      if (value && [...value].length <= MAX_USER_ID) return value;
    }
  }
  return null;
}
