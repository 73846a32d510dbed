"""The Worker's pure modules (edge/src), run in workerd, against the proxy's Python on the same
random inputs: the stable reorder with pins and drops, item ids, the sticky bucket, the
annotate rounding, the vector decoding and the JSON reading rules."""

from __future__ import annotations

import base64
import json
import math
import subprocess
from typing import Any

import numpy as np
import orjson

from plugins.arrange import arrange
from plugins.builtin.dotted import item_ids
from proxy.routing.arms import bucket
from tests.support.edge import EDGE_DIR, skip_without_node

# The harness: a Worker importing the modules under test, bundled by esbuild and run in
# workerd through miniflare (node's own V8 lacks JSON.parse's source text access, which
# workerd's has), answering a POST of the cases with their results.
HARNESS = """
import { arrange, itemIds } from "./ranking.js";
import { bucket } from "./arms.js";
import { roundHalfEven } from "./rules.js";
import { decodeVector } from "./vectors.js";
import { candidateScan, parseFeed } from "./json.js";

async function run(cases) {
  const out = {};
  out.arrange = cases.arrange.map(([items, positions, scores, fixed, dropped]) =>
    arrange(items, positions, scores, Uint8Array.from(fixed), Uint8Array.from(dropped)));
  out.ids = cases.ids.map(([body, path]) => {
    const key = path.at(-1) ?? null;
    const parsed = parseFeed(new TextEncoder().encode(body), key, candidateScan(key));
    return itemIds(parsed.doc.items, path, parsed.floatIds);
  });
  out.bucket = await Promise.all(cases.bucket.map(([salt, user]) => bucket(salt, user)));
  out.round = cases.round.map(([x, d]) => roundHalfEven(x, d));
  out.vectors = cases.vectors.map(([text, dim]) => {
    const v = decodeVector(text, dim);
    return v === null ? null : Array.from(v);
  });
  out.json = cases.json.map((body) => {
    try {
      const parsed = parseFeed(new TextEncoder().encode(body), "id", candidateScan("id"));
      return { unsafe: parsed.unsafe, value: JSON.stringify(parsed.doc) };
    } catch (error) {
      return { skip: error.reason ?? String(error) };
    }
  });
  return out;
}

export default {
  async fetch(request) {
    return Response.json(await run(await request.json()));
  },
};
"""

RUNNER = """
import { readFileSync } from "node:fs";
import * as esbuild from "esbuild";
import { Miniflare } from "miniflare";
const [src, harness] = process.argv.slice(1);
const bundle = await esbuild.build({
  stdin: { contents: harness, resolveDir: src, loader: "js" },
  bundle: true, format: "esm", platform: "neutral", write: false, external: ["node:*"],
});
const mf = new Miniflare({
  modules: true, script: bundle.outputFiles[0].text, cf: false,
  compatibilityDate: "2026-07-01", compatibilityFlags: ["nodejs_compat"],
});
try {
  const res = await mf.dispatchFetch("http://harness/", { method: "POST", body: readFileSync(0) });
  process.stdout.write(await res.text());
} finally {
  await mf.dispose();
}
"""


def run_js(cases: dict[str, Any]) -> dict[str, Any]:
    skip_without_node()
    done = subprocess.run(
        ["node", "--input-type=module", "-e", RUNNER, str(EDGE_DIR / "src"), HARNESS],
        cwd=EDGE_DIR,
        input=json.dumps(cases),
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert done.returncode == 0, done.stderr
    result: dict[str, Any] = json.loads(done.stdout)
    return result


def arrange_cases(rng: np.random.Generator, count: int) -> list[list[Any]]:
    cases = []
    for _ in range(count):
        n = int(rng.integers(1, 25))
        positions = sorted(rng.choice(n, size=int(rng.integers(1, n + 1)), replace=False).tolist())
        # few distinct values: ties, which the stable sort must keep in origin order
        scores = rng.integers(-3, 4, size=len(positions)).astype(float).tolist()
        unscored = np.ones(n, dtype=bool)
        unscored[positions] = False
        fixed = (unscored | (rng.random(n) < 0.2)).tolist()
        dropped = (rng.random(n) < 0.2).tolist()
        cases.append([list(range(n)), positions, scores, fixed, dropped])
    return cases


def test_js_agrees_with_the_proxy() -> None:
    rng = np.random.default_rng(7)
    arrange_in = arrange_cases(rng, 300)
    id_values = ["a", 7, -3, 1.0, 1.5, True, None, {"x": 1}, "", 10**20]
    ids_in = []
    for _ in range(40):
        values = rng.choice(len(id_values), size=6).tolist()
        flat = [{"id": id_values[v]} if v != 9 else {"id": 12} for v in values]
        flat.append({"other": 1})
        flat.append(["id"])
        ids_in.append([json.dumps({"items": flat}), ["id"]])
        nested = [{"data": {"id": id_values[v]}} for v in values if v != 9]
        ids_in.append([json.dumps({"items": nested}), ["data", "id"]])
    ids_in.append(['{"items": [{"id": 1.0}, {"id": 2}, {"id": 3e0}, {"id": -0}]}', ["id"]])
    bucket_in = [[f"s{k % 7}", f"u{k}\u00e9\u20ac"] for k in range(300)]
    round_in = [
        [float(x), int(d)]
        for x, d in zip(rng.standard_normal(300) * 50, rng.integers(0, 13, 300), strict=True)
    ]
    round_in += [[2.5, 0], [-2.5, 0], [0.125, 2], [-0.00001, 4], [12.34565, 4], [1e300, 4]]
    round_in += [[x, d] for x in (math.pi, -math.e, 0.5, 1.5, -1e-12) for d in (0, 3)]
    good = np.array([1.5, -2.0, 3.0], dtype="<f4").tobytes()
    vectors_in = [
        [base64.b64encode(good).decode(), 3],
        [base64.b64encode(good).decode(), 4],  # wrong length
        [base64.b64encode(np.array([1, np.nan, 2], dtype="<f4").tobytes()).decode(), 3],
        ["not base64!", 3],
        [None, 3],
    ]
    json_in = [
        '{"items": [{"id": "a", "n": 1.0, "m": -0.0}]}',
        '{"items": [{"id": "a", "n": 18446744073709551615}]}',  # 2^64-1: exact? no
        '{"items": [{"id": "a", "n": 9007199254740992}]}',  # 2^53: a double holds it
        '{"items": [{"id": "a", "n": 123456789012345678901234567}]}',
        '{"items": [{"id": "a", "n": 1e999}]}',
        '{"items": [{"id": "a", "n": 1e-999}]}',
        '{"items": [{"id": "1234567890123456789"}]}',  # a long string: no number at all
        '{"items": [1, 2',
        "\ufeff{}",
    ]
    got = run_js(
        {
            "arrange": arrange_in,
            "ids": ids_in,
            "bucket": bucket_in,
            "round": round_in,
            "vectors": vectors_in,
            "json": json_in,
        }
    )

    for (items, positions, scores, fixed, dropped), js in zip(
        arrange_in, got["arrange"], strict=True
    ):
        py = arrange(
            items,
            np.asarray(positions, dtype=np.intp),
            np.asarray(scores, dtype=np.float32),
            np.asarray(fixed),
            np.asarray(dropped),
            None,
        )
        assert js == py, (items, positions, scores, fixed, dropped)

    for (body, path), js in zip(ids_in, got["ids"], strict=True):
        items = orjson.loads(body)["items"]
        assert js == item_ids(items, tuple(path)), body

    assert got["bucket"] == [bucket(salt, user) for salt, user in bucket_in]

    for (x, d), js in zip(round_in, got["round"], strict=True):
        assert js == float(np.float64(x).round(d) + 0.0), (x, d)

    assert got["vectors"] == [[1.5, -2.0, 3.0], None, None, None, None]

    py_json = []
    for body in json_in:
        try:
            doc = orjson.loads(body)
        except orjson.JSONDecodeError:
            py_json.append("bad-json")
            continue
        py_json.append(doc)
    js_json = got["json"]
    # values survive unless the edge says unsafe-number; what orjson refuses is bad-json
    for body, py, js in zip(json_in, py_json, js_json, strict=True):
        if py == "bad-json":
            assert js == {"skip": "bad-json"}, body
        elif js["unsafe"]:
            assert json.loads(js["value"]) != json.loads(body), body
        else:
            assert json.loads(js["value"]) == py, body
    assert [j.get("unsafe") for j in js_json] == [
        False,
        True,
        False,
        True,
        None,
        False,
        False,
        None,
        None,
    ]
