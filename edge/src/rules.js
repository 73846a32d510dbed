// The built-in rules that run at the edge, with the semantics of plugins/builtin/pin.py,
// plugins/builtin/filter.py (field conditions), plugins/builtin/boost.py and plugins/builtin/annotate.py.
// `rankgate edge build` refuses a route whose plugins are anything else.

import { Skip } from "./skip.js";

const isObject = (node) => node !== null && typeof node === "object" && !Array.isArray(node);
const hasOwn = Object.prototype.hasOwnProperty;
const DIGITS = /^[0-9]+$/;

function fieldAt(item, path) {
  if (path.length === 1) {
    return isObject(item) && hasOwn.call(item, path[0]) ? item[path[0]] : null;
  }
  let node = item;
  for (const part of path) {
    if (isObject(node)) {
      node = hasOwn.call(node, part) ? node[part] : null;
    } else if (Array.isArray(node) && DIGITS.test(part) && Number(part) < node.length) {
      node = node[Number(part)];
    } else {
      return null;
    }
  }
  return node;
}

// JSON types kept apart: true is not 1, "1" is not 1; a missing field is null.
function typedKey(value) {
  switch (typeof value) {
    case "boolean":
      return `b:${value}`;
    case "number":
      return `n:${value}`;
    case "string":
      return `s:${value}`;
    default:
      return value === null ? "z" : null; // objects and arrays match nothing
  }
}

// Python's bool(): empty arrays and objects are false too.
function truthy(value) {
  if (value === null) return false;
  if (Array.isArray(value)) return value.length > 0;
  if (typeof value === "object") return Object.keys(value).length > 0;
  return Boolean(value);
}

/** items -> Uint8Array mask of the items whose field matches the condition. */
function matcher(spec) {
  const path = spec.field;
  if (spec.values === null) {
    return (items) => Uint8Array.from(items, (item) => (truthy(fieldAt(item, path)) ? 1 : 0));
  }
  const wanted = new Set(spec.values.map(typedKey));
  return (items) =>
    Uint8Array.from(items, (item) => (wanted.has(typedKey(fieldAt(item, path))) ? 1 : 0));
}

// numpy's round(x, d): rint(x * 10^d) / 10^d, half to even; "+ 0" turns -0 into 0.
export function roundHalfEven(x, digits) {
  const f = 10 ** digits;
  const y = x * f;
  let r = Math.round(y);
  if (r - y === 0.5 && r % 2 !== 0) r -= 1;
  return r / f + 0;
}

function compileRule(rule) {
  switch (rule.use) {
    case "pin": {
      const matches = matcher(rule);
      return (ctx) => {
        const hit = matches(ctx.items);
        for (let i = 0; i < hit.length; i++) if (hit[i]) ctx.fixed[i] = 1;
      };
    }
    case "filter": {
      const matches = matcher(rule);
      return (ctx) => {
        const hit = matches(ctx.items);
        for (let i = 0; i < hit.length; i++) if (hit[i]) ctx.dropped[i] = 1;
      };
    }
    case "boost":
      return (ctx) => {
        const { positions, scores, items } = ctx;
        for (let k = 0; k < positions.length; k++) {
          const value = fieldAt(items[positions[k]], rule.field);
          scores[k] += rule.weight * (typeof value === "number" ? value : rule.missing);
        }
      };
    case "annotate":
      return (ctx) => {
        const { positions, scores, items } = ctx;
        for (let k = 0; k < positions.length; k++) {
          const item = items[positions[k]];
          if (isObject(item)) item[rule.key] = roundHalfEven(scores[k], rule.round);
        }
      };
    default:
      throw new Error(`rule ${rule.use} does not run at the edge`);
  }
}

export function compileRules(rules) {
  return rules.map((rule) => ({ name: rule.use, run: compileRule(rule) }));
}

/**
 * Every rule in order; each is checked for what it left (finite scores) and for the
 * budget before the next runs (plugins/run.py RoutePlugins.rerank).
 */
export function applyRules(rules, ctx, deadline, now) {
  for (const rule of rules) {
    try {
      rule.run(ctx);
    } catch (error) {
      console.error(JSON.stringify({ event: "plugin-error", plugin: rule.name, error: String(error) }));
      throw new Skip("plugin-error", rule.name);
    }
    if (!ctx.scores.every(Number.isFinite)) throw new Skip("plugin-error", rule.name);
    if (now() > deadline) throw new Skip("budget", rule.name);
  }
}
