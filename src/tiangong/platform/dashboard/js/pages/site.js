// Site page: one factory's connectivity KPIs now and over time, and its devices.

import { api } from "../api.js";
import { TimeChart } from "../chart.js";
import { emptyState, errorState, loadingState, meter, stateBadge } from "../components.js";
import { formatClock, formatInt, formatNumber, formatPercent } from "../format.js";
import { html, render } from "../html.js";
import { DeviceTable } from "../device-table.js";

const RANGES = { "1h": "1 h", "6h": "6 h", "24h": "24 h", "7d": "7 d" };
const RANGE_MS = { "1h": 3_600_000, "6h": 6 * 3_600_000, "24h": 24 * 3_600_000, "7d": 7 * 24 * 3_600_000 };

export async function mount(outlet, { id }, scope) {
  render(outlet, loadingState("Loading site…"));
  let site;
  try {
    site = await api.site(id, { signal: scope.signal });
  } catch (error) {
    if (error.name === "AbortError") return;
    render(outlet, html`<div class="crumbs"><a href="#/sites">Sites</a></div><div class="card">${errorState(error, `Could not load site ${id}`)}</div>`);
    return;
  }
  if (!scope.active) return;
  let range = "24h";
  render(outlet, html`<div class="crumbs"><a href="#/sites">Sites</a></div>
    <div class="page-head"><div><h1>${site.name}</h1>
      <div class="sub">${site.location || site.id} · time zone ${site.timezone} · <span class="mono">${site.id}</span></div></div></div>
    <section class="grid kpis four" data-kpis>${loadingState()}</section>
    <section class="card">
      <div class="card-head"><h2>Connectivity over time</h2><span class="sub">networking rate 联网率 and data coverage 采集覆盖率</span>
        <div class="tools"><span class="chart-note" data-note></span>
          <div class="segmented" role="group" aria-label="Range" data-ranges>${Object.entries(RANGES).map(
            ([key, label]) => html`<button type="button" data-range="${key}" aria-pressed="${String(key === range)}">${label}</button>`,
          )}</div></div></div>
      <div class="card-body" data-chart></div>
    </section>
    <section class="card" data-links-card><div class="card-head"><h2>Network links</h2>
      <span class="sub">access, 5G slice and measured link quality per device · degraded links first</span></div>
      <div data-links>${loadingState()}</div></section>
    <section class="card"><div class="card-head"><h2>Devices</h2><span class="sub">at this site</span></div>
      <div data-device-table></div></section>`);

  scope.poll(
    async (signal) => {
      const links = await api.siteLinks(site.id, { signal });
      if (scope.active) renderLinks(outlet.querySelector("[data-links]"), links);
    },
    15_000,
    { onError: (error) => render(outlet.querySelector("[data-links]"), errorState(error, "Could not load the links")) },
  );

  const chart = new TimeChart(outlet.querySelector("[data-chart]"), {
    height: 260,
    kind: "percent",
    clamp: [0, 1],
    emptyText: "No KPI samples yet: the platform records one a minute.",
  });
  scope.onDispose(() => chart.destroy());
  let first = true;
  const poller = scope.poll(
    async (signal) => {
      const kpis = await api.siteKpis(site.id, `-${range}`, { signal });
      if (!scope.active) return;
      first = false;
      renderKpis(outlet.querySelector("[data-kpis]"), kpis.current);
      const now = Date.now();
      chart.setData({
        series: [
          { name: "Networking rate", points: kpis.history.map((k) => [Date.parse(k.ts), k.networking_rate]) },
          { name: "Data coverage", points: kpis.history.map((k) => [Date.parse(k.ts), k.coverage]), dashed: true },
        ],
        start: now - RANGE_MS[range],
        end: now,
        gapMs: 5 * 60_000,
      });
      outlet.querySelector("[data-note]").textContent = kpis.history.length
        ? `${formatInt(kpis.history.length)} samples since ${formatClock(kpis.history[0].ts, false)}`
        : "";
    },
    15_000,
    { onError: (error) => first && render(outlet.querySelector("[data-kpis]"), html`<div class="card">${errorState(error)}</div>`) },
  );
  outlet.querySelector("[data-ranges]").addEventListener("click", (e) => {
    const button = e.target.closest("button[data-range]");
    if (!button) return;
    range = button.dataset.range;
    for (const b of outlet.querySelectorAll("[data-range]")) b.setAttribute("aria-pressed", String(b === button));
    poller.now();
  });

  new DeviceTable(outlet.querySelector("[data-device-table]"), scope, { fixedSite: site.id });
}

function renderKpis(host, k) {
  render(host, html`
    <div class="card kpi hero"><div class="kpi-label">Networking rate <span class="zh">联网率</span></div>
      <div class="kpi-value">${formatPercent(k?.networking_rate)}</div>${meter(k?.networking_rate)}
      <div class="kpi-foot">online ÷ registered devices</div></div>
    <div class="card kpi"><div class="kpi-label">Devices online <span class="zh">在线设备</span></div>
      <div class="kpi-value">${formatInt(k?.online)}<span class="of"> / ${formatInt(k?.registered)}</span></div>
      <div class="kpi-foot">${formatInt(k?.reporting)} reporting data</div></div>
    <div class="card kpi"><div class="kpi-label">Data coverage <span class="zh">采集覆盖率</span></div>
      <div class="kpi-value">${formatPercent(k?.coverage)}</div>${meter(k?.coverage, { tone: "accent" })}
      <div class="kpi-foot">data points reporting ÷ declared</div></div>
    <div class="card kpi"><div class="kpi-label">Data points <span class="zh">数据点</span></div>
      <div class="kpi-value">${formatInt(k?.reporting_metrics)}<span class="of"> / ${formatInt(k?.expected_metrics)}</span></div>
      <div class="kpi-foot">reporting / declared by thing models</div></div>`);
}

const ACCESS = { "5g": "5G", wifi: "Wi-Fi", wired: "Wired", fieldbus: "Fieldbus" };

function ms(value) {
  return value == null ? "–" : `${formatNumber(value, value < 10 ? 2 : 1)} ms`;
}

function renderLinks(host, links) {
  const access = Object.entries(links.by_access);
  if (!links.devices.length) {
    render(host, emptyState("No devices at this site", "Register devices with a network profile."));
    return;
  }
  // Degraded links first, then by device id: what needs attention is at the top.
  const rows = [...links.devices].sort((a, b) => (b.degraded.length > 0) - (a.degraded.length > 0) || a.device_id.localeCompare(b.device_id));
  render(host, html`
    <div class="link-summary">${access.map(([key, a]) => html`<div class="link-access" data-access="${key}">
      <div class="kpi-label">${ACCESS[key] || key}</div>
      <div class="kpi-value small">${formatPercent(a.networking_rate)}</div>${meter(a.networking_rate)}
      <div class="kpi-foot">${formatInt(a.online)} / ${formatInt(a.registered)} online · ${formatInt(a.degraded)} degraded</div></div>`)}</div>
    <table class="data" data-link-rows>
      <thead><tr><th>Device</th><th>Access</th><th>State</th><th class="right">Round trip</th><th class="right">Jitter</th>
        <th class="right">Loss</th><th class="right">Reconnects</th><th>Link</th></tr></thead>
      <tbody>${rows.map((d) => html`<tr data-link="${d.device_id}" class="${d.degraded.length ? "row-degraded" : ""}">
        <td><a class="dev-name" href="#/devices/${encodeURIComponent(d.device_id)}">${d.name || d.device_id}</a><span class="dev-id">${d.device_id}</span></td>
        <td>${ACCESS[d.network.access] || d.network.access}${d.network.slice ? html`<span class="dev-id">slice ${d.network.slice}${d.network.five_qi ? ` · 5QI ${d.network.five_qi}` : ""}</span>` : ""}</td>
        <td>${stateBadge(d.state)}</td>
        <td class="right nowrap">${ms(d.rtt_ms)}</td>
        <td class="right nowrap">${ms(d.jitter_ms)}</td>
        <td class="right nowrap">${d.loss_pct == null ? "–" : `${formatNumber(d.loss_pct, 1)} %`}</td>
        <td class="right">${d.reconnects == null ? "–" : formatInt(d.reconnects)}</td>
        <td>${d.degraded.length ? html`<span class="badge sev-major" title="${d.degraded.join("; ")}">degraded</span> <span class="sub">${d.degraded.join("; ")}</span>` : html`<span class="badge ok">ok</span>`}</td>
      </tr>`)}</tbody></table>`);
}
