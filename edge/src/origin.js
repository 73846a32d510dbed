// Requests to the origin. With the ORIGIN variable set (a base URL), the path and query
// go there; unset, the request goes to its own URL, which for a Worker on a route is the
// zone's origin. Redirects pass through to the client (redirect: "manual").

export function originUrl(url, env) {
  const base = (env.ORIGIN ?? "").replace(/\/+$/, "");
  return base ? `${base}${url.pathname}${url.search}` : url.href;
}

/**
 * Fetch `request` from the origin: same method, headers and (streamed) body, minus the
 * headers in `drop`. `raw` keeps the response's Content-Encoding undecoded, so a feed
 * the Worker does not re-rank goes back exactly as the origin sent it (the option
 * works on fetch() itself, not on a Request).
 */
export function fetchOrigin(request, url, env, { drop = [], raw = false } = {}) {
  const headers = new Headers(request.headers);
  for (const name of drop) headers.delete(name);
  const target = originUrl(url, env);
  if (target !== url.href) {
    // Another host: tell it the one the client asked for, as the proxy does.
    headers.set("X-Forwarded-Host", url.host);
    headers.set("X-Forwarded-Proto", url.protocol.replace(":", ""));
  }
  const upstream = new Request(target, {
    method: request.method,
    headers,
    body: request.method === "GET" || request.method === "HEAD" ? null : request.body,
    redirect: "manual",
  });
  return raw ? fetch(upstream, { encodeResponseBody: "manual" }) : fetch(upstream);
}

/** What the proxy answers when the origin fails (proxy/http/forward.py): 502 and why. */
export function originError(error, reason = "origin-unreachable") {
  const detail =
    reason === "origin-unreachable"
      ? `cannot connect to the origin: ${error}`
      : "the origin broke off the response";
  console.error(JSON.stringify({ event: "origin-error", reason, error: String(error) }));
  return Response.json({ error: reason, detail }, { status: 502 });
}

/** Everything no route names: the origin's response, streamed back untouched. */
export async function passThrough(request, url, env) {
  try {
    return await fetchOrigin(request, url, env);
  } catch (error) {
    return originError(error);
  }
}
