// The routes of the build's config (compiled by `rankgate edge build` from routes.yaml,
// validated there exactly as the proxy validates them) made ready to match requests.

import { candidateScan } from "./json.js";
import { compileRules } from "./rules.js";

function escapeRegex(text) {
  return text.replace(/[.*+?^${}()|[\]\\/]/g, "\\$&");
}

function pathMatcher(match) {
  if (match.prefix !== undefined) return (path) => path.startsWith(match.prefix);
  if (match.exact !== undefined) return (path) => path === match.exact;
  // /u/{id}/feed: each {name} is one non-empty segment (proxy/routing/snapshot.py).
  const regex = new RegExp(`^${match.segments.map(escapeRegex).join("[^/]+")}$`);
  return (path) => regex.test(path);
}

export function compileRoute(spec) {
  const matchesPath = pathMatcher(spec.match);
  const methods = new Set(spec.methods);
  const idKey = spec.item_id.length ? spec.item_id[spec.item_id.length - 1] : null;
  return {
    name: spec.name,
    matches: (method, path) => methods.has(method) && matchesPath(path),
    user: spec.user,
    items: spec.items,
    itemId: spec.item_id,
    idKey,
    scan: candidateScan(idKey),
    budgetMs: spec.budget_ms,
    default: spec.default,
    experiments: spec.experiments,
    vary: spec.vary,
    rules: compileRules(spec.rules),
  };
}
