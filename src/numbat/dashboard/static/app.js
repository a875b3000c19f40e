// The numbat dashboard page: alert status (live, by server-sent events) and graphs
// (uPlot). Every string from an emitter or the analyzer is set as textContent or as a
// property, never parsed as HTML; the Content-Security-Policy allows no inline script.
"use strict";

const SEVERITIES = ["critical", "warning", "unknown", "ok"];
const $ = (id) => document.getElementById(id);
const state = {
  config: { token_required: false, refresh_s: 2, grafana: false },
  range: { relative: 3600000 },
  charts: [],
  series: [],
};

function el(tag, className, text) {
  const node = document.createElement(tag);
  if (className) node.className = className;
  if (text !== undefined && text !== null) node.textContent = String(text);
  return node;
}

function age(ms) {
  const s = Math.max(0, Math.round((Date.now() - ms) / 1000));
  if (s < 90) return s + " s";
  if (s < 5400) return Math.round(s / 60) + " min";
  if (s < 172800) return Math.round(s / 3600) + " h";
  return Math.round(s / 86400) + " d";
}

// -- mutations: JSON, same origin, the token when the dashboard has one ----------------

async function post(path, body) {
  const headers = { "Content-Type": "application/json" };
  const token = sessionStorage.getItem("numbat-token") || $("token").value;
  if (token) headers.Authorization = "Bearer " + token;
  const resp = await fetch(path, { method: "POST", headers, body: JSON.stringify(body) });
  const data = await resp.json().catch(() => ({}));
  const box = $("action-error");
  if (!resp.ok) {
    box.textContent = data.error || "failed: " + resp.status;
    box.hidden = false;
    return null;
  }
  box.hidden = true;
  return data;
}

// -- alert status ----------------------------------------------------------------------

function incidentRow(incident) {
  const row = el("div", "incident");
  row.dataset.id = incident.id;
  row.append(el("span", "host", incident.host || "-"));
  row.append(el("span", "name", incident.name));
  row.append(el("span", "age", age(incident.fired_at)));
  row.append(el("span", "message", incident.message || ""));
  const flags = [];
  if (incident.acked_by) flags.push("acknowledged by " + incident.acked_by);
  if (incident.muted_by) flags.push(incident.muted_by.startsWith("silence:") ? "silenced" : "inhibited");
  if (incident.flapping) flags.push("flapping");
  row.append(el("span", "state", flags.join(", ")));
  const actions = el("span", "actions");
  if (!incident.acked_by) {
    const ack = el("button", "ack", "acknowledge");
    ack.type = "button";
    ack.addEventListener("click", () => post("/api/ack", { incident: incident.id }));
    actions.append(ack);
  }
  if (!incident.muted_by) {
    const silence = el("button", "silence", "silence 1 h");
    silence.type = "button";
    silence.addEventListener("click", () =>
      post("/api/silence", { name: incident.name, host: incident.host || "", duration: 3600 }),
    );
    actions.append(silence);
  }
  row.append(actions);
  return row;
}

function renderStatus(status) {
  const error = $("analyzer-error");
  error.hidden = !status.error;
  error.textContent = status.error || "";
  const hosts = status.hosts || { beating: [], missing: [] };
  // With the analyzer out of reach nobody knows who beats: say "?" rather than 0.
  $("hosts").dataset.known = String(!status.error);
  $("beating-count").textContent = status.error ? "?" : hosts.beating.length;
  $("missing-count").textContent = status.error ? "?" : hosts.missing.length;
  const missing = $("missing");
  missing.replaceChildren(...hosts.missing.map((h) => el("span", "host", h)));
  const open = status.incidents.filter((i) => !i.acked_by);
  const acked = status.incidents.filter((i) => i.acked_by);
  const groups = $("severities");
  groups.replaceChildren();
  for (const severity of SEVERITIES) {
    const mine = open.filter((i) => i.status === severity);
    if (!mine.length) continue;
    const box = el("div", "severity " + severity);
    box.dataset.severity = severity;
    box.append(el("h3", null, severity + " (" + mine.length + ")"));
    mine.forEach((i) => box.append(incidentRow(i)));
    groups.append(box);
  }
  $("all-well").hidden = Boolean(status.error) || open.length > 0;
  $("acked-box").hidden = acked.length === 0;
  $("acked-count").textContent = acked.length;
  $("acked").replaceChildren(...acked.map(incidentRow));
}

function listen() {
  const live = $("live");
  const source = new EventSource("/api/events");
  source.addEventListener("status", (event) => {
    live.textContent = "live";
    live.className = "live on";
    renderStatus(JSON.parse(event.data));
  });
  source.onerror = () => {
    live.textContent = "reconnecting";
    live.className = "live off";
  };
}

// -- series list -------------------------------------------------------------------------

function groupBy(items, key) {
  const out = new Map();
  for (const item of items) {
    const k = key(item);
    if (!out.has(k)) out.set(k, []);
    out.get(k).push(item);
  }
  return out;
}

function tagText(tags) {
  return Object.entries(tags).map(([k, v]) => k + "=" + v).join(" ");
}

function renderSeries() {
  const list = $("series-list");
  list.replaceChildren();
  for (const [app, ofApp] of groupBy(state.series, (s) => s.app)) {
    const appBox = el("details", "app");
    appBox.open = true;
    appBox.append(el("summary", null, app));
    const names = [...new Set(ofApp.map((s) => s.measurement))];
    for (const name of names) {
      const hosts = new Set(ofApp.filter((s) => s.measurement === name && s.host).map((s) => s.host));
      if (hosts.size > 1) {
        const all = el("button", "series by-host", name + " (by host)");
        all.type = "button";
        all.dataset.measurement = name;
        all.addEventListener("click", () => addChart(name, {}, "host"));
        appBox.append(all);
      }
    }
    for (const [host, ofHost] of groupBy(ofApp, (s) => s.host)) {
      const hostBox = el("details", "host");
      hostBox.open = true;
      hostBox.append(el("summary", null, host || "(no host)"));
      for (const series of ofHost) {
        const button = el("button", "series", series.measurement);
        button.type = "button";
        button.title = tagText(series.tags);
        button.dataset.measurement = series.measurement;
        button.addEventListener("click", () => addChart(series.measurement, series.tags, null));
        hostBox.append(button);
      }
      appBox.append(hostBox);
    }
    list.append(appBox);
  }
}

async function loadSeries() {
  const q = $("search").value;
  const resp = await fetch("/api/series?q=" + encodeURIComponent(q));
  if (!resp.ok) return;
  state.series = (await resp.json()).series;
  renderSeries();
}

// -- graphs --------------------------------------------------------------------------------

function span() {
  if (state.range.relative) {
    const end = Date.now();
    return [end - state.range.relative, end];
  }
  return [state.range.start, state.range.end];
}

function graphUrl(chart) {
  const [start, end] = span();
  const params = new URLSearchParams({ measurement: chart.measurement, start, end });
  for (const [k, v] of Object.entries(chart.tags)) if (k !== chart.by) params.append("tag", k + "=" + v);
  if (chart.by) params.set("by", chart.by);
  return "/api/graph?" + params.toString();
}

const COLORS = ["#1f77b4", "#d62728", "#2ca02c", "#9467bd", "#ff7f0e", "#17becf", "#8c564b", "#e377c2"];

function plotOptions(chart, graph, width) {
  const series = [{}];
  graph.series.forEach((s, i) => {
    // A series sent less often than a bucket (a cron job's figure once a minute) has
    // empty buckets around each value: join them and show each point, or nothing is
    // drawn at all. A dense series keeps its gaps (a gap there means missing data).
    const sparse = isSparse(s.values);
    series.push({
      label: s.label,
      stroke: COLORS[i % COLORS.length],
      width: 1.5,
      spanGaps: sparse,
      points: sparse ? { show: true, size: 5 } : {},
    });
  });
  const options = {
    width,
    height: 220,
    series,
    // the whole range asked for, not only the buckets with data: a note or an
    // incident of the last moments lies after the last bucket's start
    scales: { x: { time: true, range: () => [chart.graph.start, chart.graph.end] } },
    axes: [{}, { label: graph.hint === "counter" ? "per second" : "", size: 60 }],
    cursor: { drag: { x: true, y: false, setScale: false } },
    hooks: {
      setSelect: [(u) => zoom(u)],
      draw: [(u) => overlay(u, chart)],
    },
  };
  if (graph.hint === "timing" && graph.series.length === 3) {
    options.bands = [
      { series: [3, 2], fill: "rgba(31,119,180,.12)" },
      { series: [2, 1], fill: "rgba(31,119,180,.22)" },
    ];
  }
  return options;
}

function zoom(u) {
  if (u.select.width < 2) return;
  const start = u.posToVal(u.select.left, "x") * 1000;
  const end = u.posToVal(u.select.left + u.select.width, "x") * 1000;
  u.setSelect({ left: 0, top: 0, width: 0, height: 0 }, false);
  setRange({ start: Math.floor(start), end: Math.ceil(end) });
}

function overlay(u, chart) {
  const graph = chart.graph;
  chart.layer.replaceChildren();
  const [start, end] = [u.scales.x.min, u.scales.x.max];
  const x = (t) => u.valToPos(Math.min(Math.max(t, start), end), "x");
  for (const band of graph.incidents) {
    const to = band.to === null ? end : band.to;
    if (to < start || band.from > end) continue;
    const shade = el("div", "band " + (band.status || ""));
    shade.style.left = x(band.from) + "px";
    shade.style.width = Math.max(2, x(to) - x(band.from)) + "px";
    shade.title = (band.host ? band.host + ": " : "") + band.message;
    chart.layer.append(shade);
    if (band.fired !== null && band.fired >= start && band.fired <= end) {
      const fired = el("div", "fired");
      fired.style.left = x(band.fired) + "px";
      fired.title = "fired: " + band.message;
      chart.layer.append(fired);
    }
  }
  for (const note of graph.annotations) {
    if (note.time < start || note.time > end) continue;
    const marker = el("div", "marker");
    marker.style.left = x(note.time) + "px";
    marker.title = note.measurement + (note.host ? " on " + note.host : "") + ": " + note.text;
    marker.append(el("span", "label", note.text || note.measurement));
    chart.layer.append(marker);
  }
}

function isSparse(values) {
  return values.filter((v) => v !== null).length < values.length / 2;
}

function describe(chart, graph) {
  const points = graph.series.reduce((n, s) => n + s.values.filter((v) => v !== null).length, 0);
  chart.box.dataset.hint = graph.hint;
  chart.box.dataset.span = String(Math.round(graph.end - graph.start));
  chart.box.dataset.points = points;
  chart.box.dataset.lines = graph.series.length;
  chart.box.dataset.sparse = String(graph.series.some((s) => isSparse(s.values)));
  chart.box.dataset.markers = graph.annotations.length;
  chart.box.dataset.incidents = graph.incidents.length;
  const last = graph.series.length ? graph.series[0].values.filter((v) => v !== null).pop() : undefined;
  chart.box.dataset.last = last === undefined ? "" : String(last);
  chart.box.dataset.values = graph.series.length
    ? graph.series[0].values.filter((v) => v !== null).join(",")
    : "";
  chart.hint.textContent = graph.hint === "counter" ? "counter, as a rate per second"
    : graph.hint === "timing" ? "timing: " + graph.series.map((s) => s.label).join(" / ")
    : graph.hint;
  chart.link.hidden = !graph.grafana;
  if (graph.grafana && /^https?:\/\//.test(graph.grafana)) chart.link.href = graph.grafana;
  chart.notes.replaceChildren(
    ...graph.annotations.map((n) =>
      el("li", null, new Date(n.time * 1000).toLocaleString() + "  " + n.measurement + (n.host ? " on " + n.host : "") + ": " + n.text),
    ),
  );
}

async function drawChart(chart) {
  let resp;
  try {
    resp = await fetch(graphUrl(chart));
  } catch (e) {
    return;
  }
  const graph = await resp.json().catch(() => ({ error: "no JSON" }));
  const problem = $("graph-error");
  if (!resp.ok) {
    problem.textContent = chart.measurement + ": " + (graph.error || resp.status);
    problem.hidden = false;
    return;
  }
  problem.hidden = true;
  chart.graph = graph;
  const data = [graph.times, ...graph.series.map((s) => s.values)];
  const width = Math.max(300, chart.box.clientWidth - 16);
  if (chart.plot && chart.lines === graph.series.length) {
    chart.plot.setData(data);
  } else {
    if (chart.plot) chart.plot.destroy();
    chart.plot = new uPlot(plotOptions(chart, graph, width), data, chart.area);
    chart.plot.over.append(chart.layer);
    chart.lines = graph.series.length;
  }
  describe(chart, graph);
  overlay(chart.plot, chart);
}

function addChart(measurement, tags, by) {
  const box = el("div", "chart");
  box.dataset.measurement = measurement;
  const title = el("div", "title");
  const chart = { measurement, tags: { ...tags }, by, box, plot: null, graph: null };
  title.append(el("span", "name", measurement));
  title.append(el("span", "tags", tagText(Object.fromEntries(Object.entries(tags).filter(([k]) => k !== by)))));
  chart.hint = el("span", "hint");
  title.append(chart.hint);
  const keys = new Set(["host"]);
  state.series.filter((s) => s.measurement === measurement).forEach((s) => Object.keys(s.tags).forEach((k) => keys.add(k)));
  const select = el("select", "by");
  select.setAttribute("aria-label", "lines by tag");
  select.append(el("option", null, "one line"));
  select.options[0].value = "";
  for (const key of keys) {
    const option = el("option", null, "by " + key);
    option.value = key;
    select.append(option);
  }
  select.value = by || "";
  select.addEventListener("change", () => {
    chart.by = select.value || null;
    drawChart(chart);
  });
  title.append(select);
  chart.link = el("a", "grafana", "Grafana");
  chart.link.target = "_blank";
  chart.link.rel = "noopener noreferrer";
  chart.link.hidden = true;
  title.append(chart.link);
  const close = el("button", "close", "remove");
  close.type = "button";
  close.addEventListener("click", () => {
    if (chart.plot) chart.plot.destroy();
    box.remove();
    state.charts = state.charts.filter((c) => c !== chart);
  });
  title.append(close);
  box.append(title);
  chart.area = el("div", "plot");
  chart.layer = el("div", "layer");
  chart.notes = el("ul", "notes");
  box.append(chart.area, chart.notes);
  $("charts").prepend(box);
  state.charts.push(chart);
  drawChart(chart);
}

function setRange(range) {
  state.range = range;
  if (range.relative) {
    $("range").value = String(range.relative);
    $("custom").hidden = true;
  } else {
    $("range").value = "custom";
    $("custom").hidden = false;
    $("from").value = localInput(range.start);
    $("to").value = localInput(range.end);
  }
  state.charts.forEach(drawChart);
}

function localInput(ms) {
  const d = new Date(ms - new Date(ms).getTimezoneOffset() * 60000);
  return d.toISOString().slice(0, 19);
}

function setup() {
  $("range").addEventListener("change", () => {
    const value = $("range").value;
    if (value === "custom") {
      const [start, end] = span();
      setRange({ start, end });
    } else {
      setRange({ relative: Number(value) });
    }
  });
  $("apply").addEventListener("click", () => {
    const start = new Date($("from").value).getTime();
    const end = new Date($("to").value).getTime();
    if (start < end) setRange({ start, end });
  });
  let searching = null;
  $("search").addEventListener("input", () => {
    clearTimeout(searching);
    searching = setTimeout(loadSeries, 200);
  });
  $("token").addEventListener("change", () => sessionStorage.setItem("numbat-token", $("token").value));
  const every = Math.max(1, state.config.refresh_s) * 1000;
  setInterval(() => {
    if ($("live-refresh").checked && state.range.relative) state.charts.forEach(drawChart);
  }, Math.max(every, 5000));
  setInterval(loadSeries, 30000);
}

async function main() {
  const resp = await fetch("/api/config");
  if (resp.ok) state.config = await resp.json();
  $("token-box").hidden = !state.config.token_required;
  setup();
  listen();
  await loadSeries();
  document.body.dataset.ready = "1";
}

main();
