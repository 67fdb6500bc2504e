// OEE page (设备综合效率): ISO 22400-2 availability × effectiveness × quality of one site's
// machines, per shift or production day in the site's time zone, per machine, and the downtime
// Pareto (availability losses by reason). Figures come from /api/v1/apps/oee; a figure the
// platform cannot know (no state data, no counts) shows as "—", never as zero.

import { oeeApi } from "../api.js";
import { emptyState, errorState, loadingState, meter } from "../components.js";
import { formatDuration, formatInt, formatPercent } from "../format.js";
import { html, render } from "../html.js";
import { bindSiteToolbar, siteToolbar, sitesOrExplain } from "../site-pages.js";

const RANGES = { "24h": "24 h", "7d": "7 d", "30d": "30 d" };
const GROUPS = { shift: "By shift", day: "By day" };
const CATEGORY = { down: "Down 故障停机", setup: "Setup 换型调整", waiting: "Waiting 待料/空闲", unknown: "No data 无数据" };

function pct(value) {
  return value === null || value === undefined ? "—" : formatPercent(value);
}

function qty(value) {
  return value === null || value === undefined ? "—" : formatInt(value);
}

function dataNote(f) {
  const notes = [];
  if (f.unknown_s > 0) notes.push(`${formatDuration(f.unknown_s * 1000)} without state data (counted as not producing)`);
  const q = f.data_quality;
  const bad = q.invalid + q.duplicates + q.out_of_order;
  if (bad) notes.push(`${formatInt(bad)} bad samples left out`);
  if (q.counter_resets) notes.push(`${formatInt(q.counter_resets)} counter resets`);
  return notes.join(" · ");
}

export async function mount(outlet, { query }, scope) {
  const state = {
    site: query.get("site") ?? "",
    range: RANGES[query.get("range")] ? query.get("range") : "24h",
    by: GROUPS[query.get("by")] ? query.get("by") : "shift",
  };
  render(outlet, loadingState("Loading sites…"));
  const sites = await sitesOrExplain(outlet, scope, "No sites yet", "OEE is computed per site: register a site and its machines.");
  if (sites === null) return;
  if (!sites.some((s) => s.id === state.site)) state.site = sites[0].id;
  render(outlet, html`<div class="page-head"><div><h1>OEE <span class="zh">设备综合效率</span></h1>
      <div class="sub">ISO 22400-2: availability × effectiveness × quality, from machine states and part counters</div></div></div>
    ${siteToolbar(sites, state, RANGES, GROUPS)}
    <section class="grid kpis four" data-kpis>${loadingState()}</section>
    <section class="card"><div class="card-head"><h2 data-periods-title>Shifts</h2>
      <span class="sub">the site's machines together: ratios of sums, never averages of ratios</span></div>
      <div class="table-wrap" data-periods>${loadingState()}</div></section>
    <section class="card"><div class="card-head"><h2>Machines</h2><span class="sub">over the whole range</span></div>
      <div class="table-wrap" data-machines>${loadingState()}</div></section>
    <section class="card"><div class="card-head"><h2>Downtime Pareto <span class="zh">停机原因</span></h2>
      <span class="sub">planned busy time lost, by reason, largest first</span></div>
      <div class="table-wrap" data-pareto>${loadingState()}</div></section>`);

  let first = true;
  const poller = scope.poll(
    async (signal) => {
      const params = { site: state.site, from: `-${state.range}`, by: state.by };
      const [report, downtime] = await Promise.all([
        oeeApi.figures(params, { signal }),
        oeeApi.downtime({ site: state.site, from: `-${state.range}` }, { signal }),
      ]);
      if (!scope.active) return;
      first = false;
      outlet.querySelector("[data-zone]").textContent = `time zone ${report.timezone}`;
      outlet.querySelector("[data-periods-title]").textContent = state.by === "shift" ? "Shifts" : "Production days";
      renderKpis(outlet.querySelector("[data-kpis]"), report.total);
      renderPeriods(outlet.querySelector("[data-periods]"), report);
      renderMachines(outlet.querySelector("[data-machines]"), report);
      renderPareto(outlet.querySelector("[data-pareto]"), downtime);
    },
    60_000,
    {
      onError: (error) => first && render(outlet.querySelector("[data-kpis]"), html`<div class="card">${errorState(error, "Could not compute OEE")}</div>`),
    },
  );
  bindSiteToolbar(outlet, state, () => poller.now());
}

function renderKpis(host, f) {
  render(host, html`
    <div class="card kpi hero" data-kpi="oee"><div class="kpi-label">OEE <span class="zh">设备综合效率</span></div>
      <div class="kpi-value">${pct(f.oee)}</div>${meter(f.oee, { good: 0.85, fair: 0.6 })}
      <div class="kpi-foot">${formatInt(f.machines)} machines · ${dataNote(f) || "complete data"}</div></div>
    <div class="card kpi" data-kpi="availability"><div class="kpi-label">Availability <span class="zh">时间开动率</span></div>
      <div class="kpi-value">${pct(f.availability)}</div>${meter(f.availability, { good: 0.9, fair: 0.75 })}
      <div class="kpi-foot">producing ${formatDuration(f.apt_s * 1000)} of ${formatDuration(f.pbt_s * 1000)} planned busy</div></div>
    <div class="card kpi" data-kpi="effectiveness"><div class="kpi-label">Effectiveness <span class="zh">性能开动率</span></div>
      <div class="kpi-value">${pct(f.effectiveness)}</div>${meter(f.effectiveness, { good: 0.95, fair: 0.8 })}
      <div class="kpi-foot">ideal cycle × produced ÷ producing time</div></div>
    <div class="card kpi" data-kpi="quality"><div class="kpi-label">Quality <span class="zh">合格品率</span></div>
      <div class="kpi-value">${pct(f.quality)}</div>${meter(f.quality, { good: 0.99, fair: 0.95 })}
      <div class="kpi-foot">${qty(f.good)} good of ${qty(f.produced)} produced · ${qty(f.scrap)} scrap</div></div>`);
}

function figureCells(f) {
  return html`<td class="right num">${pct(f.oee)}</td><td class="right num">${pct(f.availability)}</td>
    <td class="right num">${pct(f.effectiveness)}</td><td class="right num">${pct(f.quality)}</td>
    <td class="right num">${qty(f.good)}</td><td class="right num">${qty(f.scrap)}</td>
    <td class="right nowrap">${f.unknown_s > 0 ? formatDuration(f.unknown_s * 1000) : "—"}</td>`;
}

const FIGURE_HEADS = html`<th class="right">OEE</th><th class="right">Availability</th><th class="right">Effectiveness</th>
  <th class="right">Quality</th><th class="right">Good</th><th class="right">Scrap</th><th class="right">No data</th>`;

function renderPeriods(host, report) {
  if (!report.periods.length) {
    render(host, emptyState("No planned time in this range", "Shifts come from the site's calendar."));
    return;
  }
  const rows = [...report.periods].reverse(); // the latest first
  render(host, html`<table class="data" data-period-rows><thead><tr><th>${report.by === "shift" ? "Shift" : "Day"}</th>
      ${FIGURE_HEADS}</tr></thead>
    <tbody>${rows.map((p) => html`<tr data-period="${p.key}"><td class="mono nowrap">${p.key}</td>${figureCells(p.figures)}</tr>`)}</tbody></table>`);
}

function renderMachines(host, report) {
  if (!report.machines.length) {
    render(host, emptyState("No production machines at this site", "OEE covers machines whose thing model has a production profile (cnc, line)."));
    return;
  }
  const rows = [...report.machines].sort((a, b) => (a.total.oee ?? 2) - (b.total.oee ?? 2) || a.device_id.localeCompare(b.device_id));
  render(host, html`<table class="data" data-machine-rows><thead><tr><th>Machine</th><th class="right">Ideal cycle</th>${FIGURE_HEADS}</tr></thead>
    <tbody>${rows.map((m) => html`<tr data-machine="${m.device_id}">
      <td><a class="dev-name" href="#/devices/${encodeURIComponent(m.device_id)}">${m.name || m.device_id}</a><span class="dev-id">${m.device_id} · ${m.model_id}</span></td>
      <td class="right nowrap">${m.ideal_cycle_s === null ? "—" : `${m.ideal_cycle_s} s`}</td>${figureCells(m.total)}</tr>`)}</tbody></table>`);
}

function renderPareto(host, downtime) {
  if (!downtime.losses.length) {
    render(host, emptyState("No downtime in this range", "Every planned minute was spent producing."));
    return;
  }
  const top = downtime.losses[0].lost_s;
  render(host, html`<table class="data" data-pareto-rows><thead><tr><th>Reason</th><th>Kind</th><th style="width:34%">Lost time</th>
      <th class="right">Lost</th><th class="right">Stops</th><th class="right">Cumulative</th></tr></thead>
    <tbody>${downtime.losses.map((l) => html`<tr data-loss="${l.reason}">
      <td class="mono">${l.reason}</td><td>${CATEGORY[l.category] || l.category}</td>
      <td>${meter(l.lost_s / top, { tone: l.category === "down" ? "bad" : l.category === "unknown" ? "accent" : "warn" })}</td>
      <td class="right nowrap">${formatDuration(l.lost_s * 1000)}</td><td class="right num">${formatInt(l.occurrences)}</td>
      <td class="right num">${formatPercent(l.cumulative_share)}</td></tr>`)}</tbody></table>`);
}
