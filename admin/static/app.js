// The live page: renders the state /events sends (or /state, once, if the
// browser has no EventSource). No dependencies, no network beyond this
// handler.
"use strict";

const $ = (sel) => document.querySelector(sel);

function el(tag, attrs, ...children) {
  const e = document.createElement(tag);
  for (const [k, v] of Object.entries(attrs || {})) {
    if (k === "class") e.className = v; else e.setAttribute(k, v);
  }
  for (const c of children) e.append(c instanceof Node ? c : document.createTextNode(String(c)));
  return e;
}

function renderPool(p) {
  const bound = p.workers.reduce((n, w) => n + w.Bound, 0);
  const rows = p.workers.map((w) => el("tr", { "data-worker": w.ID, "data-incarnation": w.Incarnation },
    el("td", {}, "worker " + w.ID),
    el("td", { class: "text state-" + w.State }, w.State),
    el("td", { class: "incarnation" }, "incarnation " + w.Incarnation),
    el("td", {}, w.Inflight),
    el("td", {}, w.Waiting),
    el("td", {}, w.Bound),
    el("td", {}, w.Calls),
    el("td", { class: "text" }, w.LastTaint || "—")));
  const table = el("table", { class: "workers" },
    el("thead", {}, el("tr", {}, ...["worker", "state", "incarnation", "running", "waiting sessions",
      "bound sessions", "calls", "last taint"].map((h) => el("th", {}, h)))),
    el("tbody", {}, ...rows));
  const max = Math.max(1, ...p.workers.map((w) => w.Bound));
  const bars = p.workers.map((w) => {
    const d = el("div", { title: `worker ${w.ID}: ${w.Bound} sessions` }, el("span", {}, w.ID));
    d.style.height = Math.round((w.Bound / max) * 100) + "%";
    return d;
  });
  return el("div", { class: "pool", "data-pool": p.name },
    el("h2", {}, `Pool ${p.name}`),
    el("p", { class: "muted" }, `${p.queued} waiting, ${p.inflight} running, ${p.restarts} restarts, ${p.failed} failed workers`),
    table,
    el("h3", {}, `Sessions per worker (${bound} bound)`),
    el("div", { class: "spread-wrap" }, el("div", { class: "spread" }, ...bars)));
}

function renderBackends(backends) {
  const section = $("#backends-section");
  if (!backends || backends.length === 0) { section.hidden = true; return; }
  section.hidden = false;
  $("#backends tbody").replaceChildren(...backends.map((b) => el("tr", {},
    el("td", {}, b.url),
    el("td", { class: "text " + (b.healthy ? "state-ready" : "unhealthy") }, b.healthy ? "healthy" : "down"),
    el("td", {}, b.weight),
    el("td", {}, b.sessions),
    el("td", {}, (100 * b.share).toFixed(1) + "%"),
    el("td", {}, b.fallbacks),
    el("td", {}, b.returns))));
}

function renderEvents(events) {
  $("#no-events").hidden = events.length > 0;
  $("#events").replaceChildren(...events.slice().reverse().map((e) => el("li", { class: e.kind },
    `${new Date(e.time).toLocaleTimeString()} pool ${e.pool} worker ${e.worker} ` +
    (e.kind === "restarted" ? `restarted: incarnation ${e.incarnation}` : `tainted (incarnation ${e.incarnation}): ${e.reason}`) +
    (e.earlier ? " (before this page first looked)" : ""))));
}

function render(s) {
  document.title = s.title;
  $("#title").textContent = s.title;
  $("#summary").textContent = `${s.sessions} live sessions, as of ${new Date(s.time).toLocaleTimeString()}`;
  $("#pools").replaceChildren(...s.pools.map(renderPool));
  renderBackends(s.backends);
  renderEvents(s.events || []);
}

function setStatus(text, cls) {
  const st = $("#status");
  st.textContent = text;
  st.className = "status " + cls;
}

// state.js set the state as of loading: the page is complete when it loads.
if (window.affinityState) render(window.affinityState);
else fetch("state").then((r) => r.json()).then(render).catch(() => setStatus("unreachable", "lost"));
if (window.EventSource) {
  const es = new EventSource("events");
  es.onmessage = (m) => { render(JSON.parse(m.data)); setStatus("live", "live"); };
  es.onerror = () => setStatus("reconnecting…", "lost");
}
