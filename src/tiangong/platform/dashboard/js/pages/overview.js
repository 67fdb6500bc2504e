// Overview: the tenant at a glance. KPI tiles, the networking rate over 24 h, the newest open
// alarms and one card per site.

import { api, getTenant } from "../api.js";
import { siteMap } from "../catalog.js";
import { TimeChart } from "../chart.js";
import { ago, errorState, loadingState, meter, severityBadge, severityPills } from "../components.js";
import { formatClock, formatInt, formatPercent, formatRate } from "../format.js";
import { html, render } from "../html.js";
import { alarmsBySite, siteCards } from "./sites.js";

const REFRESH_MS = 5000;
const HISTORY_REFRESH_MS = 30_000;

export async function mount(outlet, _params, scope) {
  render(outlet, html`<div class="page-head">
      <div><h1>Overview</h1><div class="sub" data-sub>&nbsp;</div></div>
    </div>
    <section class="grid kpis" data-kpis>${loadingState()}</section>
    <section class="grid split">
      <div class="card">
        <div class="card-head"><h2>Networking rate <span class="muted">联网率</span></h2>
          <span class="sub">online ÷ registered devices, last 24 h</span>
          <div class="tools"><span class="chart-note" data-history-note></span></div></div>
        <div class="card-body" data-chart></div>
      </div>
      <div class="card">
        <div class="card-head"><h2>Open alarms</h2><div class="tools"><a href="#/alarms">View all →</a></div></div>
        <div class="card-body flush" data-alarms>${loadingState()}</div>
      </div>
    </section>
    <section class="grid sites" data-sites></section>`);

  const chart = new TimeChart(outlet.querySelector("[data-chart]"), {
    height: 260,
    kind: "percent",
    clamp: [0, 1],
    emptyText: "No KPI samples yet: the platform records one a minute.",
  });
  scope.onDispose(() => chart.destroy());

  let first = true;
  scope.poll(
    async (signal) => {
      const [overview, kpis, sites, alarms] = await Promise.all([
        api.overview({ signal }),
        api.kpis({ signal }),
        siteMap(),
        api.alarms({ open: true, limit: 500 }, { signal }),
      ]);
      if (!scope.active) return;
      first = false;
      renderSummary(outlet, overview, kpis, sites);
      renderAlarms(outlet.querySelector("[data-alarms]"), alarms);
      render(outlet.querySelector("[data-sites]"), siteCards(sites, kpis, alarmsBySite(alarms.items)));
    },
    REFRESH_MS,
    {
      onError: (error) => {
        if (first) render(outlet.querySelector("[data-kpis]"), html`<div class="card">${errorState(error, "Could not load the overview")}</div>`);
      },
    },
  );

  scope.poll(async (signal) => {
    const sites = await siteMap();
    // Without a tenant (a platform with none yet) there is no tenant total to ask for.
    const [total, ...perSite] = await Promise.all([
      getTenant() ? api.tenantKpiHistory("-24h", { signal }) : [],
      ...[...sites.keys()].map((id) => api.siteKpis(id, "-24h", { signal })),
    ]);
    if (!scope.active) return;
    const series = [{ name: "All sites", points: total.map((k) => [Date.parse(k.ts), k.networking_rate]) }];
    if (sites.size > 1) {
      for (const s of perSite) {
        series.push({ name: sites.get(s.site_id)?.name ?? s.site_id, points: s.history.map((k) => [Date.parse(k.ts), k.networking_rate]) });
      }
    }
    const now = Date.now();
    chart.setData({ series, start: now - 24 * 3_600_000, end: now, gapMs: 5 * 60_000 });
    const note = outlet.querySelector("[data-history-note]");
    note.textContent = total.length ? `${formatInt(total.length)} samples since ${formatClock(total[0].ts, false)}` : "";
  }, HISTORY_REFRESH_MS);
}

function renderSummary(outlet, overview, kpis, sites) {
  const total = kpis.find((k) => k.site_id === "*" && (!getTenant() || k.tenant_id === getTenant()));
  const registered = total?.registered ?? 0;
  const online = total?.online ?? 0;
  const states = overview.devices || {};
  const offline = states.offline || 0;
  const provisioned = states.provisioned || 0;
  const alarmsOpen = overview.alarms_open || {};
  const alarmTotal = Object.values(alarmsOpen).reduce((a, b) => a + b, 0);
  const tenant = overview.tenants.find((t) => t.id === getTenant());

  const sub = outlet.querySelector("[data-sub]");
  sub.textContent = `${tenant ? tenant.name : "All tenants"} · ${sites.size} site${sites.size === 1 ? "" : "s"} · platform up since ${formatClock(overview.started_at, false)}`;

  render(outlet.querySelector("[data-kpis]"), html`
    <div class="card kpi hero" data-kpi="networking-rate">
      <div class="kpi-label">Networking rate <span class="zh">联网率</span></div>
      <div class="kpi-value" data-networking-rate>${formatPercent(overview.networking_rate)}</div>
      ${meter(overview.networking_rate)}
      <div class="kpi-foot">${formatInt(online)} of ${formatInt(registered)} registered devices online</div>
    </div>
    <div class="card kpi" data-kpi="devices-online">
      <div class="kpi-label">Devices online <span class="zh">在线设备</span></div>
      <div class="kpi-value"><span data-online>${formatInt(online)}</span><span class="of"> / ${formatInt(registered)}</span></div>
      <div class="kpi-foot">${formatInt(offline)} offline · ${formatInt(provisioned)} awaiting commissioning</div>
    </div>
    <div class="card kpi" data-kpi="coverage">
      <div class="kpi-label">Data coverage <span class="zh">采集覆盖率</span></div>
      <div class="kpi-value">${formatPercent(overview.coverage)}</div>
      ${meter(overview.coverage, { tone: "accent" })}
      <div class="kpi-foot">${formatInt(total?.reporting_metrics)} of ${formatInt(total?.expected_metrics)} data points reporting</div>
    </div>
    <div class="card kpi" data-kpi="alarms">
      <div class="kpi-label">Open alarms <span class="zh">未处理告警</span></div>
      <div class="kpi-value">${formatInt(alarmTotal)}</div>
      ${severityPills(alarmsOpen, { link: true })}
    </div>
    <div class="card kpi" data-kpi="ingest">
      <div class="kpi-label">Ingest rate <span class="zh">接入速率</span></div>
      <div class="kpi-value">${formatRate(overview.ingest_points_per_s)}<span class="unit">points/s</span></div>
      <div class="kpi-foot">${overview.broker_connected ? "MQTT broker connected" : html`<span style="color:var(--sev-critical)">MQTT broker disconnected</span>`}</div>
    </div>
    <div class="card kpi" data-kpi="points">
      <div class="kpi-label">Points stored <span class="zh">已存储数据点</span></div>
      <div class="kpi-value">${formatInt(overview.points_stored_total)}</div>
      <div class="kpi-foot">since the platform started${
        overview.dead_letters && Object.keys(overview.dead_letters).length
          ? html` · <span title="rejected messages">${formatInt(Object.values(overview.dead_letters).reduce((a, b) => a + b, 0))} rejected</span>`
          : ""
      }</div>
    </div>`);
}

function renderAlarms(host, alarms) {
  if (!alarms.items.length) {
    render(host, html`<div class="state-box" data-empty><div class="title">No open alarms</div>
      <div class="hint">All rules are quiet. New alarms appear here within seconds.</div></div>`);
    return;
  }
  const shown = alarms.items.slice().sort((a, b) => Date.parse(b.raised_at) - Date.parse(a.raised_at)).slice(0, 7);
  render(host, html`<ul class="list">${shown.map(
    (a) => html`<li><span class="sev-bar sev-${a.severity}"></span>
      <div class="what"><div class="main-line">${a.rule_name}</div>
        <div class="sub"><a href="#/devices/${encodeURIComponent(a.device_id)}">${a.device_id}</a> · ${a.message}</div></div>
      <div class="right nowrap">${severityBadge(a.severity)}<div class="when">${ago(a.raised_at)}</div></div></li>`,
  )}</ul>${alarms.total > shown.length ? html`<div class="card-foot"><span>${formatInt(alarms.total - shown.length)} more</span><a href="#/alarms">Open the alarm list →</a></div>` : ""}`);
}
