// Device detail: what the device is, its live values (every 2 s), a trend chart of any metric,
// and its alarms, events and lifecycle history.

import { api } from "../api.js";
import { siteMap, siteName, thingModel } from "../catalog.js";
import { TimeChart } from "../chart.js";
import {
  alarmStateBadge,
  ago,
  emptyState,
  errorState,
  loadingState,
  severityBadge,
  stateBadge,
} from "../components.js";
import { displayValue, formatDateTime, formatNumber, titleCase } from "../format.js";
import { html, render } from "../html.js";
import { updateQuery } from "../router.js";

// Bucket sizes chosen for ~200-400 points per range (the API's minimum interval is 1 s), and
// how often the chart refetches: about once per bucket, but not more than every 5 s.
const RANGES = {
  "15m": { label: "15 m", ms: 15 * 60_000, interval: "3s", intervalMs: 3000, refreshMs: 5000 },
  "1h": { label: "1 h", ms: 3_600_000, interval: "15s", intervalMs: 15_000, refreshMs: 10_000 },
  "6h": { label: "6 h", ms: 6 * 3_600_000, interval: "1m", intervalMs: 60_000, refreshMs: 30_000 },
  "24h": { label: "24 h", ms: 24 * 3_600_000, interval: "5m", intervalMs: 300_000, refreshMs: 60_000 },
  "7d": { label: "7 d", ms: 7 * 24 * 3_600_000, interval: "30m", intervalMs: 1_800_000, refreshMs: 300_000 },
};
const AGGREGATES = ["avg", "min", "max", "last", "count"];
const CHARTABLE = new Set(["float", "int", "enum", "bool"]);

export async function mount(outlet, { id, query }, scope) {
  render(outlet, loadingState("Loading device…"));
  let device;
  let model;
  let sites;
  try {
    device = await api.device(id, { signal: scope.signal });
    [model, sites] = await Promise.all([thingModel(device.tenant_id, device.model_id, device.model_version), siteMap()]);
  } catch (error) {
    if (error.name === "AbortError") return;
    render(outlet, html`<div class="crumbs"><a href="#/devices">Devices</a></div>
      <div class="card">${errorState(error, `Could not load device ${id}`)}</div>`);
    return;
  }
  if (!scope.active) return;
  const properties = model?.properties ?? [];
  const chartable = properties.filter((p) => CHARTABLE.has(p.type));

  const state = {
    metric: chartable.some((p) => p.id === query.get("metric")) ? query.get("metric") : (chartable.find((p) => p.type === "float") ?? chartable[0])?.id,
    range: RANGES[query.get("range")] ? query.get("range") : "1h",
    agg: AGGREGATES.includes(query.get("agg")) ? query.get("agg") : null,
  };
  const spec = (metric) => properties.find((p) => p.id === metric);
  const defaultAgg = (metric) => (["enum", "bool"].includes(spec(metric)?.type) ? "last" : "avg");
  state.agg ??= defaultAgg(state.metric);

  const site = sites.get(device.site_id);
  render(outlet, html`
    <div class="crumbs"><a href="#/devices">Devices</a> / <a href="#/sites/${encodeURIComponent(device.site_id)}">${siteName(sites, device.site_id)}</a></div>
    <div class="page-head"><div>
      <h1 data-device-name>${device.name || device.id} <span data-state-badge>${stateBadge(device.state)}</span></h1>
      <div class="sub"><span class="mono">${device.id}</span> · ${model?.name ?? device.model_id} · v${device.model_version}</div></div></div>
    <section class="card"><div class="card-body">
      <dl class="facts" style="margin:0" data-facts></dl>
      ${Object.keys(device.attributes).length ? html`<div class="attrs">${Object.entries(device.attributes).map(
        ([k, v]) => html`<span class="attr"><span>${k}</span><span>${v}</span></span>`,
      )}</div>` : ""}
    </div></section>
    <section class="card">
      <div class="card-head"><h2>Live values</h2><span class="sub">newest value of each data point · refreshes every 2 s</span></div>
      <div class="card-body"><div class="tiles" data-tiles>${properties.length ? "" : emptyState("This thing model declares no properties")}</div></div>
    </section>
    <section class="card">
      <div class="card-head"><h2>Trend</h2>
        <div class="tools">
          <label class="field">Metric <select data-metric-select>${chartable.map(
            (p) => html`<option value="${p.id}" ${p.id === state.metric ? "selected" : ""}>${p.name || p.id}</option>`,
          )}</select></label>
          <div class="segmented" role="group" aria-label="Range" data-ranges>${Object.entries(RANGES).map(
            ([key, r]) => html`<button type="button" data-range="${key}" aria-pressed="${String(key === state.range)}">${r.label}</button>`,
          )}</div>
          <label class="field">Aggregate <select data-agg>${AGGREGATES.map(
            (a) => html`<option value="${a}" ${a === state.agg ? "selected" : ""}>${a}</option>`,
          )}</select></label>
        </div></div>
      <div class="card-body"><div data-chart></div><div class="chart-note" data-chart-note style="margin-top:6px">&nbsp;</div></div>
    </section>
    <section class="grid thirds">
      <div class="card"><div class="card-head"><h2>Alarms</h2><div class="tools"><a href="#/alarms?device=${encodeURIComponent(device.id)}">All alarms →</a></div></div>
        <div class="card-body flush" data-alarms>${loadingState()}</div></div>
      <div class="card"><div class="card-head"><h2>Recent events</h2></div>
        <div class="card-body flush" data-events>${loadingState()}</div></div>
      <div class="card"><div class="card-head"><h2>Lifecycle</h2></div>
        <div class="card-body flush" data-transitions>${loadingState()}</div></div>
    </section>`);

  const renderFacts = (d) => {
    render(outlet.querySelector("[data-facts]"), html`
      <div class="fact"><dt>State</dt><dd>${titleCase(d.state)} since ${ago(d.state_changed_at)}</dd></div>
      <div class="fact"><dt>Last seen</dt><dd>${ago(d.last_seen_at)}</dd></div>
      <div class="fact"><dt>Site</dt><dd><a href="#/sites/${encodeURIComponent(d.site_id)}" title="${site?.name ?? d.site_id}">${siteName(sites, d.site_id)}</a></dd></div>
      <div class="fact"><dt>Thing model</dt><dd title="${model?.name ?? ""}">${d.model_id} v${d.model_version}</dd></div>
      <div class="fact"><dt>Gateway</dt><dd>${d.gateway_id ?? html`<span class="faint">direct</span>`}</dd></div>
      <div class="fact"><dt>Registered</dt><dd>${formatDateTime(d.created_at)}</dd></div>`);
    render(outlet.querySelector("[data-state-badge]"), stateBadge(d.state));
  };
  renderFacts(device);

  // Live value tiles: built once, then updated in place so that a change can flash.
  const tiles = outlet.querySelector("[data-tiles]");
  if (properties.length) {
    render(tiles, html`${properties.map((p) => html`<button type="button" class="tile" data-metric="${p.id}" aria-pressed="${String(p.id === state.metric)}"
        ${CHARTABLE.has(p.type) ? "" : "disabled"} title="${p.description || p.name || p.id}">
        <span class="tile-name">${p.name || p.id}</span>
        <span class="tile-value" data-value>—</span>
        <span class="tile-time" data-time>no data yet</span></button>`)}`);
  }
  const updateTiles = (latest) => {
    const byMetric = new Map(latest.values.map((v) => [v.metric, v]));
    for (const tile of tiles.querySelectorAll(".tile")) {
      const v = byMetric.get(tile.dataset.metric);
      if (!v) continue;
      const d = displayValue(v.value, v.unit, spec(v.metric)?.type);
      const valueEl = tile.querySelector("[data-value]");
      const shown = `${d.text}\u0000${d.unit}`;
      if (valueEl.dataset.shown !== shown) {
        const hadValue = valueEl.dataset.shown !== undefined;
        render(valueEl, html`${d.text}${d.unit ? html`<span class="unit">${d.unit}</span>` : ""}`);
        valueEl.dataset.shown = shown;
        valueEl.classList.toggle("enum", d.kind === "enum" || d.kind === "bool");
        if (hadValue) {
          tile.classList.remove("changed");
          void tile.offsetWidth; // restart the flash animation
          tile.classList.add("changed");
        }
      }
      render(tile.querySelector("[data-time]"), ago(v.ts));
    }
  };
  scope.poll(async (signal) => {
    const latest = await api.latest(device.id, { signal });
    if (scope.active) updateTiles(latest);
  }, 2000);

  // Trend chart.
  const chart = new TimeChart(outlet.querySelector("[data-chart]"), { height: 300 });
  scope.onDispose(() => chart.destroy());
  const note = outlet.querySelector("[data-chart-note]");
  let chartGeneration = 0;
  const chartPoller = scope.poll(
    async (signal) => {
      if (!state.metric) {
        chart.setData({ series: [] });
        note.textContent = "This thing model has no numeric data points to chart.";
        return;
      }
      const generation = chartGeneration;
      const range = RANGES[state.range];
      const result = await api.telemetry(device.id, { metric: state.metric, start: `-${state.range}`, interval: range.interval, agg: state.agg }, { signal });
      if (!scope.active || generation !== chartGeneration) return;
      const p = spec(state.metric);
      const labels = p?.type === "enum" ? p.enum : p?.type === "bool" ? ["Off", "On"] : null;
      const counting = state.agg === "count";
      chart.configure({
        kind: labels && !counting ? "enum" : "number",
        labels: counting ? null : labels,
        unit: counting ? null : result.unit,
        emptyText: `No ${p?.name ?? state.metric} data in the last ${range.label}`,
        minSpanMs: 5 * range.intervalMs,
      });
      const name = `${p?.name ?? state.metric} (${state.agg})`;
      chart.setData({
        series: [{ name, points: result.points }],
        start: Date.parse(result.start),
        end: Date.parse(result.end),
        gapMs: Math.max(4 * range.intervalMs, 60_000),
      });
      const first = result.points[0];
      note.textContent = result.points.length
        ? `${formatNumber(result.points.length)} buckets of ${range.interval} (${state.agg})${
          first && first[0] > Date.parse(result.start) + range.intervalMs * 2 ? ` · data from ${formatDateTime(first[0])}` : ""
        }`
        : "";
    },
    RANGES[state.range].refreshMs,
  );
  const redrawChart = () => {
    chartGeneration += 1;
    updateQuery({ metric: state.metric, range: state.range !== "1h" ? state.range : "", agg: state.agg !== defaultAgg(state.metric) ? state.agg : "" });
    for (const t of tiles.querySelectorAll(".tile")) t.setAttribute("aria-pressed", String(t.dataset.metric === state.metric));
    chartPoller.setInterval(RANGES[state.range].refreshMs);
    chartPoller.now();
  };
  const metricSelect = outlet.querySelector("[data-metric-select]");
  const aggSelect = outlet.querySelector("[data-agg]");
  const selectMetric = (metric) => {
    const previousDefault = defaultAgg(state.metric);
    state.metric = metric;
    // Keep a deliberately chosen aggregate; otherwise use the new metric's natural one.
    if (state.agg === previousDefault) state.agg = defaultAgg(metric);
    metricSelect.value = metric;
    aggSelect.value = state.agg;
    redrawChart();
  };
  metricSelect.addEventListener("change", () => selectMetric(metricSelect.value));
  tiles.addEventListener("click", (e) => {
    const tile = e.target.closest(".tile");
    if (tile && !tile.disabled) selectMetric(tile.dataset.metric);
  });
  aggSelect.addEventListener("change", () => {
    state.agg = aggSelect.value;
    redrawChart();
  });
  outlet.querySelector("[data-ranges]").addEventListener("click", (e) => {
    const button = e.target.closest("button[data-range]");
    if (!button) return;
    state.range = button.dataset.range;
    for (const b of outlet.querySelectorAll("[data-range]")) b.setAttribute("aria-pressed", String(b === button));
    redrawChart();
  });

  // Device record, alarms, events and lifecycle: slower-moving, every 10 s.
  const eventNames = new Map((model?.events ?? []).map((e) => [e.id, e.name || e.id]));
  scope.poll(async (signal) => {
    const [fresh, alarms, events, transitions] = await Promise.all([
      api.device(device.id, { signal }),
      api.alarms({ device: device.id, limit: 20 }, { signal }),
      api.events(device.id, 20, { signal }),
      api.transitions(device.id, 20, { signal }),
    ]);
    if (!scope.active) return;
    renderFacts(fresh);
    renderAlarmList(outlet.querySelector("[data-alarms]"), alarms);
    renderEvents(outlet.querySelector("[data-events]"), events, eventNames);
    renderTransitions(outlet.querySelector("[data-transitions]"), transitions);
  }, 10_000);
}

function renderAlarmList(host, alarms) {
  if (!alarms.items.length) {
    render(host, emptyState("No alarms", "No rule has fired for this device."));
    return;
  }
  render(host, html`<ul class="list">${alarms.items.map(
    (a) => html`<li><span class="sev-bar sev-${a.severity}"></span>
      <div class="what"><div class="main-line">${a.rule_name}</div><div class="sub" title="${a.message}">${a.message}</div></div>
      <div class="right nowrap">${a.state === "cleared" ? alarmStateBadge(a.state) : severityBadge(a.severity)}<div class="when">${ago(a.raised_at)}</div></div></li>`,
  )}</ul>`);
}

function eventData(data) {
  const entries = Object.entries(data || {});
  if (!entries.length) return "";
  return entries.map(([k, v]) => `${k}: ${typeof v === "number" ? formatNumber(v) : typeof v === "object" ? JSON.stringify(v) : v}`).join(" · ");
}

function renderEvents(host, events, names) {
  if (!events.length) {
    render(host, emptyState("No events yet", "Faults, job starts and other device events appear here."));
    return;
  }
  render(host, html`<ul class="list">${events.map(
    (e) => html`<li><span class="sev-bar sev-${e.severity}"></span>
      <div class="what"><div class="main-line">${names.get(e.event) ?? e.event}</div>
        <div class="sub" title="${eventData(e.data)}">${eventData(e.data) || html`<span class="faint">${e.event}</span>`}</div></div>
      <div class="when">${ago(e.ts)}</div></li>`,
  )}</ul>`);
}

function renderTransitions(host, transitions) {
  if (!transitions.length) {
    render(host, emptyState("No lifecycle changes", "The device has stayed in its first state."));
    return;
  }
  render(host, html`<ol class="timeline">${transitions.map(
    (t) => html`<li class="to-${t.to}"><div><b>${titleCase(t.from)}</b> → <b>${titleCase(t.to)}</b>
      <span class="faint" style="float:right">${ago(t.ts)}</span></div><div class="reason">${t.reason}</div></li>`,
  )}</ol>`);
}
