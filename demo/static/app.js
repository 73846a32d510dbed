// The demo page: the origin's order beside rankgate's, and the proxy's live metrics.
// Plain ES module, no build step, no network but this site.

const SHOWN = 20; // rows per column until "Show all"
const STATS_EVERY_MS = 2000;

const $ = (id) => document.getElementById(id);

const state = {
  users: [],
  feedSize: 100,
  user: null, // "" = no user
  beta: false,
  seq: 0, // newest load; older answers are dropped
  showAll: false,
  genre: "",
  token: null, // the last feed response's X-Rankgate-Id: clicks name it
};

// -- cookies: what the proxy reads (route user: [cookie:uid, ...], cookie beta=1) -------

function getCookie(name) {
  for (const part of document.cookie.split(";")) {
    const [k, ...v] = part.trim().split("=");
    if (k === name) return decodeURIComponent(v.join("="));
  }
  return null;
}

function setCookie(name, value) {
  if (value === null) {
    document.cookie = `${name}=; path=/; max-age=0; SameSite=Lax`;
  } else {
    document.cookie = `${name}=${encodeURIComponent(value)}; path=/; SameSite=Lax`;
  }
}

// -- small DOM helpers ---------------------------------------------------------------------

function el(tag, attrs = {}, ...children) {
  const node = document.createElement(tag);
  for (const [k, v] of Object.entries(attrs)) {
    if (v === null || v === undefined || v === false) continue;
    if (k === "class") node.className = v;
    else if (k.startsWith("data-")) node.setAttribute(k, v);
    else node[k] = v;
  }
  for (const child of children.flat()) {
    if (child === null || child === undefined) continue;
    node.append(child instanceof Node ? child : document.createTextNode(String(child)));
  }
  return node;
}

function ms(value) {
  if (value === null || value === undefined) return "–";
  if (value < 1) return `${(value * 1000).toFixed(0)} µs`;
  return `${value.toFixed(value < 10 ? 2 : 1)} ms`;
}

// -- the headers rankgate adds ---------------------------------------------------------------

export function parseRerank(value) {
  // "applied; model=ranker_v1; arm=default" / "skipped; reason=no-user"
  const out = { raw: value || "", outcome: "", model: "", arm: "", reason: "" };
  if (!value) return out;
  const [outcome, ...params] = value.split(";").map((s) => s.trim());
  out.outcome = outcome;
  for (const p of params) {
    const [k, v] = p.split("=");
    if (k in out) out[k] = v;
  }
  return out;
}

export function parseServerTiming(value) {
  // "origin;dur=1.20, redis;dur=0.31" -> [{name, dur}]
  if (!value) return [];
  return value.split(",").map((entry) => {
    const [name, ...params] = entry.trim().split(";");
    const dur = params.map((p) => p.trim()).find((p) => p.startsWith("dur="));
    return { name: name.trim(), dur: dur ? Number(dur.slice(4)) : null };
  });
}

// -- the feed view -----------------------------------------------------------------------------

async function getJSON(path, init = {}) {
  const started = performance.now();
  const resp = await fetch(path, { cache: "no-store", credentials: "same-origin", ...init });
  const body = await resp.json();
  return { resp, body, ms: performance.now() - started };
}

function renderUsers() {
  const box = $("users");
  box.replaceChildren();
  const choices = [
    ...state.users.map((u) => ({ id: u.id, label: u.label, title: u.top?.length ? `model's first picks: ${u.top.join(", ")}` : "" })),
    { id: "", label: "no user", title: "no uid cookie: rankgate serves the origin's order" },
  ];
  for (const choice of choices) {
    const button = el(
      "button",
      {
        class: "chip" + (choice.id === state.user ? " active" : ""),
        "data-user": choice.id,
        title: choice.title,
        type: "button",
      },
      choice.label,
    );
    button.addEventListener("click", () => selectUser(choice.id));
    box.append(button);
  }
}

function selectUser(id) {
  state.user = id;
  const persona = state.users.find((u) => u.id === id);
  state.genre = persona ? persona.genre : "";
  setCookie("uid", id === "" ? null : id);
  renderUsers();
  loadFeed();
}

function genreMix(items) {
  const counts = new Map();
  for (const item of items) for (const g of item.genres || []) counts.set(g, (counts.get(g) || 0) + 1);
  return [...counts.entries()].sort((a, b) => b[1] - a[1] || a[0].localeCompare(b[0])).slice(0, 5);
}

function renderMix(box, items) {
  box.replaceChildren(
    el("span", { class: "k" }, `top ${items.length}:`),
    ...genreMix(items).map(([g, n]) =>
      el("span", { class: "tag" + (g === state.genre ? " loved" : "") }, `${g} ${n}`),
    ),
  );
}

// The proxy's annotate plugin writes each re-ranked item's score into it (routes.yaml).
const SCORE_FIELD = "_score";

function scoreOf(item) {
  const value = item[SCORE_FIELD];
  return typeof value === "number" && Number.isFinite(value) ? value : null;
}

function itemRow(item, position, delta, highlighted, withScore) {
  const tags = (item.genres || []).map((g) =>
    el("span", { class: "tag" + (g === state.genre ? " loved" : "") }, g),
  );
  let badge = null;
  if (delta !== null) {
    if (delta > 0) badge = el("span", { class: "delta up", title: `was #${position + delta}` }, `▲ ${delta}`);
    else if (delta < 0) badge = el("span", { class: "delta down", title: `was #${position + delta}` }, `▼ ${-delta}`);
    else badge = el("span", { class: "delta same", title: "same place" }, "=");
  }
  const score = withScore ? scoreOf(item) : null;
  return el(
    "li",
    {
      "data-id": item.id,
      "data-score": score === null ? null : String(score),
      class: [position > SHOWN ? "extra" : "", highlighted ? "hl" : ""].join(" ").trim() || null,
    },
    el("span", { class: "pos" }, position),
    el(
      "div",
      { class: "body" },
      el("div", { class: "title" }, item.title, item.year && !String(item.title).includes(`(${item.year})`) ? el("span", { class: "year" }, ` (${item.year})`) : null),
      el("div", { class: "tags" }, tags),
    ),
    badge,
    score === null
      ? null
      : el("span", { class: "score", title: `model score ${score} (${SCORE_FIELD} in the served item)` }, score.toFixed(3)),
  );
}

function renderLists(originItems, rankedItems, applied) {
  const originPos = new Map(originItems.map((item, k) => [item.id, k + 1]));
  const rankedTop = new Set(rankedItems.slice(0, SHOWN).map((item) => item.id));
  const originList = $("origin-list");
  originList.replaceChildren(
    ...originItems.map((item, k) => itemRow(item, k + 1, null, applied && rankedTop.has(item.id), false)),
  );
  const rankedList = $("ranked-list");
  rankedList.replaceChildren(
    ...rankedItems.map((item, k) => {
      const was = originPos.get(item.id);
      return itemRow(item, k + 1, was === undefined ? null : was - (k + 1), false, true);
    }),
  );
  renderMix($("origin-mix"), originItems.slice(0, SHOWN));
  renderMix($("ranked-mix"), rankedItems.slice(0, SHOWN));
}

function renderStatus(rerank, timing, fetchMs) {
  const code = $("x-rerank");
  code.textContent = rerank.raw || "(none)";
  code.className = rerank.outcome === "applied" ? "ok" : "warn";
  $("model").textContent = rerank.model || (rerank.outcome === "applied" ? "?" : "origin order");
  $("model").className = "pill" + (rerank.model === "ranker_v2" || rerank.arm.startsWith("beta") ? " beta" : "");
  $("arm").textContent = rerank.arm || rerank.reason || "–";
  const chips = timing.map((t) =>
    el("span", { class: "chip static" }, el("b", {}, t.name), " ", t.dur === null ? "" : ms(t.dur)),
  );
  chips.push(el("span", { class: "chip static muted", title: "measured by this page" }, el("b", {}, "page fetch"), " ", ms(fetchMs)));
  $("timing").replaceChildren(...chips);
}

async function loadFeed() {
  const seq = ++state.seq;
  document.body.dataset.state = "loading";
  const n = state.feedSize;
  try {
    // Both requests go through the proxy; only /api/feed is a route it re-ranks.
    const [origin, ranked] = await Promise.all([
      getJSON(`/api/catalogue?limit=${n}`),
      getJSON(`/api/feed?limit=${n}`),
    ]);
    if (seq !== state.seq) return; // a newer choice is loading
    const rerank = parseRerank(ranked.resp.headers.get("X-Rerank"));
    state.token = ranked.resp.headers.get("X-Rankgate-Id");
    const timing = parseServerTiming(ranked.resp.headers.get("Server-Timing"));
    renderLists(origin.body.items, ranked.body.items, rerank.outcome === "applied");
    renderStatus(rerank, timing, ranked.ms);
    const who = state.user ? `uid=${state.user}` : "no uid";
    $("ranked-sub").replaceChildren(
      el("code", {}, "GET /api/feed"),
      ` through the proxy · ${who}${state.beta ? " · beta=1" : ""}`,
    );
    const list = $("ranked-list");
    list.dataset.ids = ranked.body.items.map((item) => item.id).join(",");
    list.dataset.rerank = rerank.raw;
    list.dataset.user = state.user;
    list.dataset.beta = state.beta ? "1" : "0";
    $("origin-list").dataset.ids = origin.body.items.map((item) => item.id).join(",");
    document.body.dataset.state = "ready";
    document.body.dataset.seq = String(seq);
  } catch (err) {
    if (seq !== state.seq) return;
    document.body.dataset.state = "error";
    $("x-rerank").textContent = `error: ${err}`;
    $("x-rerank").className = "warn";
  }
}

// -- the metrics view --------------------------------------------------------------------------

let statsTimer = null;
let lastFeedCount = null;

function bars(box, rows) {
  const max = Math.max(1, ...rows.map((r) => r.count));
  box.replaceChildren(
    ...(rows.length
      ? rows.map((r) =>
          el(
            "div",
            { class: "bar-row" },
            el("span", { class: "bar-label" }, r.label),
            el("span", { class: "bar" }, el("span", { class: `fill ${r.kind || ""}`, style: `width:${(100 * r.count) / max}%` })),
            el("span", { class: "bar-value" }, r.count),
          ),
        )
      : [el("div", { class: "hint" }, "no feed requests yet")]),
  );
}

function renderStats(s) {
  if (s.error) {
    $("scraped").textContent = s.error;
    return;
  }
  $("scraped").textContent = `last at ${new Date(s.scraped_at * 1000).toLocaleTimeString()}`;
  $("m-feed").textContent = s.feed_requests;
  $("m-pass").textContent = s.passthrough_requests;
  if (lastFeedCount !== null) {
    const rate = (s.feed_requests - lastFeedCount) / (STATS_EVERY_MS / 1000);
    $("m-rate").textContent = rate > 0 ? `${rate.toFixed(1)} req/s` : "";
  }
  lastFeedCount = s.feed_requests;
  bars(
    $("m-outcomes"),
    s.outcomes.map((o) => ({
      label: o.reason ? `${o.outcome} · ${o.reason}` : o.outcome,
      count: o.count,
      kind: o.outcome === "applied" ? "ok" : o.outcome === "control" ? "muted" : "warn",
    })),
  );
  bars(
    $("m-arms"),
    s.arms.map((a) => ({ label: `${a.model} · ${a.arm}`, count: a.count, kind: a.model === "ranker_v2" ? "beta" : "ok" })),
  );
  $("m-ctr").replaceChildren(
    ...(s.ctr || []).map((row) =>
      el(
        "tr",
        { "data-arm": row.arm },
        el("td", {}, row.arm),
        el("td", {}, row.model),
        el("td", {}, row.responses),
        el("td", {}, row.clicks),
        el("td", {}, row.ctr === null ? "–" : `${(100 * row.ctr).toFixed(1)}%`),
      ),
    ),
  );
  $("m-stages").replaceChildren(
    ...s.stages.map((st) =>
      el(
        "tr",
        { "data-stage": st.stage },
        el("td", {}, st.stage),
        el("td", {}, st.count),
        el("td", {}, ms(st.p50_ms)),
        el("td", {}, ms(st.p99_ms)),
        el("td", {}, ms(st.mean_ms)),
      ),
    ),
  );
  const { hits, misses } = s.item_cache;
  $("m-hit").textContent = hits + misses ? `${((100 * hits) / (hits + misses)).toFixed(1)}%` : "–";
  $("m-cache").textContent = `${hits} item vectors from the local cache, ${misses} from Valkey`;
  $("m-models").replaceChildren(
    ...s.models.map((m) => el("li", {}, el("b", {}, m.model), " ", el("code", { title: m.sha256 }, m.sha256.slice(0, 12)))),
  );
  const reloads = Object.entries(s.reloads).map(([k, v]) => `${k} ${v}`).join(", ");
  $("m-process").textContent =
    (s.cold_start_s !== null ? `ready ${s.cold_start_s.toFixed(2)} s after process start. ` : "") +
    (reloads ? `routes reloads: ${reloads}` : "");
  $("m-missing").textContent = s.missing.length ? `not exported by this proxy: ${s.missing.join(", ")}` : "";
  document.body.dataset.stats = String(s.feed_requests);
}

async function pollStats() {
  try {
    renderStats((await getJSON("/api/stats")).body);
  } catch (err) {
    $("scraped").textContent = `cannot reach /api/stats: ${err}`;
  }
}

function showView(name) {
  for (const tab of document.querySelectorAll(".tab")) tab.classList.toggle("active", tab.dataset.view === name);
  $("view-feed").hidden = name !== "feed";
  $("view-metrics").hidden = name !== "metrics";
  clearInterval(statsTimer);
  if (name === "metrics") {
    pollStats();
    statsTimer = setInterval(pollStats, STATS_EVERY_MS);
  }
  history.replaceState(null, "", name === "feed" ? location.pathname : `#${name}`);
}

async function sendTraffic() {
  const button = $("traffic-btn");
  button.disabled = true;
  $("traffic-result").textContent = "sending…";
  try {
    const { body } = await getJSON("/api/traffic?n=200", { method: "POST" });
    const top = Object.entries(body.x_rerank).slice(0, 4).map(([k, v]) => `${v}× ${k}`).join(" · ");
    $("traffic-result").textContent = `${body.sent} in ${body.seconds}s: ${top}`;
    document.body.dataset.traffic = String(Number(document.body.dataset.traffic || 0) + 1);
    pollStats();
  } catch (err) {
    $("traffic-result").textContent = `failed: ${err}`;
  } finally {
    button.disabled = false;
  }
}

// -- start -------------------------------------------------------------------------------------

// A click on a served item goes back to rankgate, naming the response it came from.
let clicks = 0;

function sendClick(event) {
  const row = event.target.closest("li[data-id]");
  if (!row || !state.token) return;
  const body = JSON.stringify({ id: state.token, item: row.dataset.id, type: "click" });
  // text/plain: what sendBeacon sends, and what rankgate's events endpoint takes.
  const sent = navigator.sendBeacon("/_rankgate/events", body);
  if (!sent) return;
  clicks += 1;
  row.classList.add("clicked");
  $("clicked").textContent = `${clicks} click${clicks === 1 ? "" : "s"} sent`;
  document.body.dataset.clicks = String(clicks);
}

async function main() {
  $("ranked-list").addEventListener("click", sendClick);
  for (const tab of document.querySelectorAll(".tab")) tab.addEventListener("click", () => showView(tab.dataset.view));
  $("traffic-btn").addEventListener("click", sendTraffic);
  $("show-all").addEventListener("click", () => {
    state.showAll = !state.showAll;
    document.body.classList.toggle("show-all", state.showAll);
    $("show-all").textContent = state.showAll ? `Show the top ${SHOWN}` : "Show all items";
  });
  const beta = $("beta");
  beta.addEventListener("change", () => {
    state.beta = beta.checked;
    setCookie("beta", state.beta ? "1" : null);
    loadFeed();
  });

  const { body } = await getJSON("/api/users");
  state.users = body.users || [];
  state.feedSize = body.feed_size || state.feedSize;
  const cookieUser = getCookie("uid");
  state.user = cookieUser !== null ? cookieUser : state.users[0]?.id ?? "";
  state.beta = getCookie("beta") === "1";
  beta.checked = state.beta;
  selectUser(state.user);
  if (location.hash === "#metrics") showView("metrics");
}

main();
