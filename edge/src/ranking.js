// Finding the items in a decoded feed and putting them in score order: the rules of
// proxy/feed/ranking.py. Only the order of the array changes; each item is the parsed object.

export class ItemsNotFound extends Error {}

const isObject = (node) => node !== null && typeof node === "object" && !Array.isArray(node);
const hasOwn = Object.prototype.hasOwnProperty;
const DIGITS = /^[0-9]+$/;

/** Follow a dotted path through objects (and arrays, by index). */
export function dig(doc, path) {
  let node = doc;
  for (const part of path) {
    if (isObject(node) && hasOwn.call(node, part)) {
      node = node[part];
    } else if (Array.isArray(node) && DIGITS.test(part) && Number(part) < node.length) {
      node = node[Number(part)];
    } else {
      throw new ItemsNotFound(path.join("."));
    }
  }
  return node;
}

/**
 * Each item's id as a string (strings and integers), null where it has none.
 * `floatIds` holds the objects whose id was written as a float literal (1.0, 1e2): the
 * proxy's parser keeps those as floats, which are not ids (see json.js).
 */
export function itemIds(items, idPath, floatIds) {
  const out = new Array(items.length);
  const last = idPath[idPath.length - 1];
  for (let k = 0; k < items.length; k++) {
    let holder = items[k];
    let value = holder;
    if (idPath.length === 1) {
      // A one-key path reads objects only (the proxy's dict.get), never array indices.
      value = isObject(holder) && hasOwn.call(holder, last) ? holder[last] : null;
    } else if (idPath.length > 1) {
      try {
        holder = dig(holder, idPath.slice(0, -1));
        value = dig(holder, [last]);
      } catch {
        out[k] = null;
        continue;
      }
    }
    if (typeof value === "string") {
      out[k] = value;
    } else if (typeof value === "number" && Number.isInteger(value)) {
      out[k] = floatIds !== null && floatIds.has(holder) ? null : String(value);
    } else {
      out[k] = null;
    }
  }
  return out;
}

/**
 * The response's array after rules (proxy/feed/ranking.py arrange). `positions` (ascending)
 * are the scored items' indices, `scores` theirs. Dropped items go; fixed items keep
 * their index (at the end, in order, if drops made the array too short); the other
 * scored items fill the free slots by descending score, stable.
 */
export function arrange(items, positions, scores, fixed, dropped) {
  const m = positions.length;
  const order = Array.from({ length: m }, (_, k) => k);
  order.sort((a, b) => scores[b] - scores[a]); // Array.prototype.sort is stable
  const ranked = [];
  for (const k of order) {
    const p = positions[k];
    if (!fixed[p] && !dropped[p]) ranked.push(p);
  }
  const pinned = [];
  let length = 0;
  for (let i = 0; i < items.length; i++) {
    if (!dropped[i]) {
      length++;
      if (fixed[i]) pinned.push(i);
    }
  }
  const source = new Array(length).fill(-1);
  for (let j = 0; j < pinned.length; j++) {
    source[Math.min(pinned[j], length - pinned.length + j)] = pinned[j];
  }
  let next = 0;
  for (let slot = 0; slot < length; slot++) {
    if (source[slot] === -1) source[slot] = ranked[next++];
  }
  return source.map((i) => items[i]);
}
