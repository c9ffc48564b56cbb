// The dashboard: plain JavaScript, no library, no asset from outside the controller.
// Every call is the API's own, with the API token in an Authorization header (kept in this
// tab's sessionStorage), so a cross-site request cannot act for the user: it has no token.
// Everything a user wrote (app names, config, log lines, test output) reaches the page as
// text (textContent), never as markup; the Content-Security-Policy allows no inline script.
"use strict";

const TOKEN_KEY = "paas-token";
let timer = null;

function token() { return sessionStorage.getItem(TOKEN_KEY); }

class ApiError extends Error {
  constructor(status, message) { super(message); this.status = status; }
}

async function api(path, options = {}) {
  const headers = { "Authorization": "Bearer " + token() };
  if (options.body !== undefined) headers["Content-Type"] = "application/json";
  const resp = await fetch(path, {
    method: options.method || "GET", headers,
    body: options.body === undefined ? undefined : JSON.stringify(options.body),
  });
  const body = await resp.json().catch(() => ({}));
  if (!resp.ok) throw new ApiError(resp.status, body.error || ("HTTP " + resp.status));
  return body;
}

// --- building the page, as text only ------------------------------------------------------
function el(tag, attrs = {}, ...children) {
  const node = document.createElement(tag);
  for (const [key, value] of Object.entries(attrs)) {
    if (key === "onclick") node.addEventListener("click", value);
    else node.setAttribute(key, value);
  }
  for (const child of children) {
    node.append(child instanceof Node ? child : document.createTextNode(String(child ?? "")));
  }
  return node;
}

function table(columns, rows) {
  return el("table", {},
    el("thead", {}, el("tr", {}, ...columns.map((c) => el("th", {}, c)))),
    el("tbody", {}, ...(rows.length ? rows.map((cells) => el("tr", {}, ...cells.map(
      (c) => el("td", {}, c)))) : [el("tr", {}, el("td", { colspan: columns.length }, "(none)"))])));
}

function showError(message) {
  const box = document.getElementById("error");
  box.textContent = message;
  box.hidden = !message;
}

function render(...nodes) {
  const page = document.getElementById("page");
  page.replaceChildren(...nodes);
}

const pct = (r) => (r === null || r === undefined ? "-" : (r * 100).toFixed(1) + "%");
const rate = (r) => (r === null || r === undefined ? "-" : r.toFixed(2));
const ms = (s) => (s === null || s === undefined ? "-" : (s * 1000).toFixed(1) + " ms");
const mb = (b) => (b === null || b === undefined ? "-" : (b / 1e6).toFixed(1) + " MB");

async function metricsOf(app, since) {
  try { return (await api(`/v1/apps/${app}/metrics?since=${since}`)).metrics; }
  catch (e) { if (e.status === 503) return null; throw e; }
}

// --- pages ----------------------------------------------------------------------------------
async function appsPage() {
  const apps = (await api("/v1/apps")).apps;
  const rows = [];
  for (const a of apps) {
    const instances = (await api(`/v1/apps/${a.name}/instances`)).instances
      .filter((i) => i.role === "live" && i.desired === "running");
    const up = instances.filter((i) => i.health === "passing").length;
    const m = await metricsOf(a.name, "5m");
    rows.push([el("a", { href: `#/apps/${a.name}` }, a.name),
      a.latest_release ? "v" + a.latest_release : "-",
      a.stable_release ? "v" + a.stable_release : "-",
      el("a", { href: a.urls[0] || "#" }, a.urls[0] || "-"),
      `${up}/${instances.length}`, m ? rate(m.total.requests_per_s) : "-",
      m ? pct(m.total.error_ratio) : "-",
      a.alerts === null ? "?" : el("span", { class: "alert" }, a.alerts.join(", "))]);
  }
  render(el("h1", {}, "Apps"),
    table(["app", "latest", "stable", "url", "healthy", "req/s", "5xx", "alerts"], rows));
}

// The app page's log tail is one stream (`logs?follow=1`) kept across the page's refreshes:
// lines are appended as the controller sends them, new instances' included.
const LOG_LINES = 500;
let logStream = null;

function stopLogs() {
  if (logStream) logStream.abort.abort();
  logStream = null;
}

function followLogs(app) {
  if (logStream && logStream.app === app) return logStream;
  stopLogs();
  const s = { app, text: "", abort: new AbortController() };
  logStream = s;
  (async () => {
    try {
      const resp = await fetch(`/v1/apps/${app}/logs?tail=50&follow=1`,
        { headers: { "Authorization": "Bearer " + token() }, signal: s.abort.signal });
      if (!resp.ok) throw new Error(`logs: HTTP ${resp.status}`);
      const reader = resp.body.pipeThrough(new TextDecoderStream()).getReader();
      for (;;) {
        const { value, done } = await reader.read();
        if (done) break;
        s.text = (s.text + value).split("\n").slice(-LOG_LINES).join("\n");
        const pre = document.getElementById("logs");
        if (pre && logStream === s) pre.textContent = s.text;
      }
    } catch (e) { /* aborted, or the stream broke: the next refresh starts another */ }
    if (logStream === s) logStream = null;
  })();
  return s;
}

async function act(what, path, body, after) {
  if (!window.confirm(what + "?")) return;
  try { await api(path, { method: "POST", body }); await after(); }
  catch (e) { showError(e.message); }
}

function chart(title, points, deploys, format, t0, t1) {
  const W = 360, H = 120, NS = "http://www.w3.org/2000/svg";
  const svg = document.createElementNS(NS, "svg");
  svg.setAttribute("class", "chart");
  svg.setAttribute("width", W); svg.setAttribute("height", H + 20);
  svg.setAttribute("data-title", title);
  const label = document.createElementNS(NS, "text");
  const last = points.length ? points[points.length - 1][1] : null;
  label.textContent = `${title}: ${last === null ? "-" : format(last)}`;
  label.setAttribute("x", 4); label.setAttribute("y", 14);
  svg.append(label);
  if (points.length > 0) {
    const top = Math.max(...points.map((p) => p[1]), 1e-9);
    const x = (t) => ((t - t0) / Math.max(t1 - t0, 1)) * (W - 8) + 4;
    const y = (v) => H + 16 - (v / top) * (H - 8);
    for (const d of deploys.filter((t) => t >= t0 && t <= t1)) {
      const line = document.createElementNS(NS, "line");
      line.setAttribute("x1", x(d)); line.setAttribute("x2", x(d));
      line.setAttribute("y1", 18); line.setAttribute("y2", H + 18);
      line.setAttribute("stroke", "#c77d00"); line.setAttribute("class", "deploy");
      svg.append(line);
    }
    const line = document.createElementNS(NS, "polyline");
    line.setAttribute("points", points.map((p) => `${x(p[0])},${y(p[1])}`).join(" "));
    line.setAttribute("fill", "none"); line.setAttribute("stroke", "#2a62c9");
    svg.append(line);
    const [lt, lv] = points[points.length - 1];  // the latest point, seen even alone
    const dot = document.createElementNS(NS, "circle");
    dot.setAttribute("cx", x(lt)); dot.setAttribute("cy", y(lv)); dot.setAttribute("r", 2.5);
    dot.setAttribute("fill", "#2a62c9");
    svg.append(dot);
  }
  return svg;
}

async function appPage(name) {
  const [app, releases, instances, events] = await Promise.all([
    api(`/v1/apps/${name}`), api(`/v1/apps/${name}/releases`),
    api(`/v1/apps/${name}/instances`), api(`/v1/apps/${name}/events`)]);
  const m = await metricsOf(name, "15m");
  let series = null;
  try { series = (await api(`/v1/apps/${name}/metrics/series?since=1h`)).series; }
  catch (e) { if (e.status !== 503) throw e; }
  const usage = Object.fromEntries((m ? m.instances : []).map((u) => [u.instance, u]));
  const reload = () => appPage(name);
  const byRelease = m ? m.releases : {};
  const rows = releases.releases.slice().reverse().map((r) => [
    "v" + r.version, r.status, r.stable ? "stable" : "", r.source,
    ...(((f) => (f ? [rate(f.requests_per_s), pct(f.error_ratio), ms(f.p50_response_s),
      ms(f.p95_response_s)] : ["", "", "", ""]))(byRelease[String(r.version)])),
    el("span", {},
      el("button", { class: "action", "data-promote": r.version,
        onclick: () => act(`Promote v${r.version} to stable`, `/v1/apps/${name}/promote`,
          { release: r.version }, reload) }, "Promote"),
      el("button", { class: "action", "data-rollback": r.version,
        onclick: () => act(`Roll back to v${r.version}`, `/v1/apps/${name}/rollback`,
          { release: r.version }, reload) }, "Roll back"))]);
  const inst = instances.instances.map((i) => [i.id || "(pending)", "v" + i.release, i.process,
    i.role, i.node || "-", i.state, i.health || "-", usage[i.id] ? rate(usage[i.id].cpu_cores) : "-",
    usage[i.id] ? mb(usage[i.id].memory_bytes) : "-"]);
  const lastDep = events.events.length ? events.events[events.events.length - 1].deployment_id : null;
  const phases = events.events.filter((e) => e.deployment_id === lastDep);
  const logs = followLogs(name).text;
  const charts = series ? el("div", { class: "charts" },
    chart("requests/s", series.requests_per_s, series.deploys, rate, series.start, series.end),
    chart("5xx/s", series.errors_per_s, series.deploys, rate, series.start, series.end),
    chart("avg response (s)", series.avg_response_s, series.deploys, (v) => v.toFixed(3),
      series.start, series.end))
    : el("p", { class: "muted" }, "No charts: this cluster runs no Prometheus.");
  render(el("h1", {}, name),
    el("p", {}, `stable v${app.app.stable_release || "-"}, latest v${app.app.latest_release || "-"}`,
      m ? ` — ${rate(m.total.requests_per_s)} req/s, 5xx ${pct(m.total.error_ratio)}, ` +
        `p50 ${ms(m.total.p50_response_s)}, p95 ${ms(m.total.p95_response_s)} (15 min)` : ""),
    el("h2", {}, "Last hour"), charts,
    el("h2", {}, "Deployment " + (lastDep ?? "-")),
    el("ol", { class: "events", id: "phases" }, ...phases.map((e) => el("li", {},
      `${e.step}: ${e.message}`))),
    el("h2", {}, "Releases"), table(["release", "status", "", "source", "req/s", "5xx", "p50",
      "p95", ""], rows),
    el("h2", {}, "Instances"),
    table(["instance", "release", "process", "role", "node", "state", "health", "cpu",
      "memory"], inst),
    el("h2", {}, "Log tail"), el("pre", { id: "logs" }, logs));
}

async function nodesPage() {
  const nodes = (await api("/v1/nodes")).nodes;
  const reload = () => nodesPage();
  render(el("h1", {}, "Nodes"), table(
    ["node", "address", "status", "cpu reserved", "memory reserved", "instances", ""],
    nodes.map((n) => [n.name, n.address, n.status, `${n.allocated.cpu} of ${n.cpu}`,
      `${n.allocated.memory_mb} of ${n.memory_mb} MB`, n.instances,
      el("button", { class: "action",
        onclick: () => act(`${n.status === "draining" ? "Undrain" : "Drain"} ${n.name}`,
          `/v1/nodes/${n.name}/drain`, { drain: n.status !== "draining" }, reload) },
      n.status === "draining" ? "Undrain" : "Drain")])));
}

// --- navigation -----------------------------------------------------------------------------
async function show() {
  clearTimeout(timer);
  const loggedIn = Boolean(token());
  document.getElementById("login").hidden = loggedIn;
  document.getElementById("nav").hidden = !loggedIn;
  if (!loggedIn) { render(); return; }
  const hash = location.hash || "#/apps";
  try {
    showError("");
    const app = hash.match(/^#\/apps\/([a-z][a-z0-9-]*)$/);
    if (!app) stopLogs();
    if (app) await appPage(app[1]);
    else if (hash === "#/nodes") await nodesPage();
    else await appsPage();
  } catch (e) {
    if (e.status === 401) {
      sessionStorage.removeItem(TOKEN_KEY);
      showError(e.message);
      document.getElementById("login").hidden = false;
      document.getElementById("nav").hidden = true;
      render();
      return;
    }
    showError(e.message);
  }
  timer = setTimeout(show, 2000);  // phases, instances and figures as they change
}

document.getElementById("login-form").addEventListener("submit", (event) => {
  event.preventDefault();
  sessionStorage.setItem(TOKEN_KEY, document.getElementById("token").value.trim());
  document.getElementById("token").value = "";
  show();
});
document.getElementById("logout").addEventListener("click", () => {
  stopLogs();
  sessionStorage.removeItem(TOKEN_KEY);
  show();
});
window.addEventListener("hashchange", show);
show();
