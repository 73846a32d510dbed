// Response headers of a feed route, as proxy/feed/stages.py and proxy/http/headers.py write them.

export function isJson(contentType) {
  if (!contentType) return false;
  const mime = contentType.split(";", 1)[0].trim().toLowerCase();
  return mime === "application/json" || mime.endsWith("+json");
}

/** The origin's Cache-Control made per user: public/s-maxage go, private comes in. */
export function privateCacheControl(value) {
  if (!value) return "private";
  const keep = [];
  for (const directive of value.split(",")) {
    const d = directive.trim();
    const name = d.split("=", 1)[0].trim().toLowerCase();
    if (!d || ["public", "s-maxage", "private", "proxy-revalidate"].includes(name)) continue;
    keep.push(d);
  }
  return ["private", ...keep].join(", ");
}

/** Merge comma-separated tokens into a header (Vary), case-insensitively unique. */
export function appendTokens(headers, name, tokens) {
  const current = (headers.get(name) ?? "")
    .split(",")
    .map((t) => t.trim())
    .filter(Boolean);
  const seen = new Set(current.map((t) => t.toLowerCase()));
  for (const token of tokens) {
    if (!seen.has(token.toLowerCase())) {
      current.push(token);
      seen.add(token.toLowerCase());
    }
  }
  if (current.length) headers.set(name, current.join(", "));
}

/** `origin;dur=1.20, kv;dur=0.31, ...` after any Server-Timing the origin sent. */
export function serverTiming(timings, prior) {
  const ours = Object.entries(timings)
    .map(([name, ms]) => `${name};dur=${ms.toFixed(2)}`)
    .join(", ");
  return prior ? `${prior}, ${ours}` : ours;
}
