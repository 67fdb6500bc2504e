// Plant energy page (能耗管理): one site's electricity from its meters, per hour, day or month
// in the site's time zone; cost split into time-of-use bands (峰 peak, 平 flat, 谷 valley);
// kWh per good unit; each device's source and data quality; abnormal consumption. Figures come
// from /api/v1/apps/energy. Consumption spread across a gap in the readings is shown as
// estimated; a figure the platform cannot know shows as "—", never as zero.
// (pages/energy.js is the national data centers' energy view, a different page.)

import { plantEnergyApi } from "../api.js";
import { emptyState, errorState, loadingState, meter } from "../components.js";
import { formatDuration, formatInt, formatNumber, formatPercent } from "../format.js";
import { html, render } from "../html.js";
import { bindSiteToolbar, siteToolbar, sitesOrExplain } from "../site-pages.js";

const RANGES = { "24h": "24 h", "7d": "7 d", "30d": "30 d", "365d": "12 months" };
const GROUPS = { hour: "By hour", day: "By day", month: "By month" };
const DEFAULT_GROUP = { "24h": "hour", "7d": "day", "30d": "day", "365d": "month" };
const BANDS = { critical: "Critical peak 尖峰", peak: "Peak 峰", flat: "Flat 平", valley: "Valley 谷" };
const BAND_TONE = { critical: "bad", peak: "warn", flat: "accent", valley: "" };
const KIND = { above_baseline: "Above its baseline", idle_consumption: "Consuming while idle" };

function kwh(value) {
  return value === null || value === undefined ? "—" : formatNumber(value);
}

function money(value, currency) {
  return value === null || value === undefined ? "—" : `${formatNumber(value, 2)} ${currency}`;
}

function when(ms, zone, by) {
  const options = { timeZone: zone, year: "numeric", month: "2-digit", day: "2-digit", hourCycle: "h23" };
  if (by === "hour") Object.assign(options, { hour: "2-digit", minute: "2-digit" });
  if (by === "month") delete options.day;
  return new Intl.DateTimeFormat("sv-SE", options).format(new Date(ms));
}

function qualityNote(d) {
  const q = d.quality;
  const notes = [];
  const bad = q.duplicates + q.invalid + q.glitches;
  if (bad) notes.push(`${formatInt(bad)} bad readings left out`);
  if (q.out_of_order) notes.push(`${formatInt(q.out_of_order)} out of order`);
  if (q.negative_power) notes.push(`${formatInt(q.negative_power)} negative power`);
  if (d.resets.length) notes.push(`${d.resets.length} counter reset${d.resets.length === 1 ? "" : "s"}`);
  // A gap a counter bridges: its consumption is known, when it happened is not. Without readings
  // (or from power readings), nothing is known and nothing was counted.
  const bridged = d.gaps.filter((g) => g.kwh !== null);
  const unknown = d.gaps.filter((g) => g.kwh === null);
  const span = (gaps) => formatDuration(gaps.reduce((sum, g) => sum + (g.end_ms - g.start_ms), 0));
  if (bridged.length) notes.push(`${bridged.length} gap${bridged.length === 1 ? "" : "s"} (${span(bridged)}, consumption estimated)`);
  if (unknown.length) notes.push(`no readings for ${span(unknown)}`);
  return notes.join(" · ") || "complete";
}

export async function mount(outlet, { query }, scope) {
  const state = {
    site: query.get("site") ?? "",
    range: RANGES[query.get("range")] ? query.get("range") : "24h",
    by: GROUPS[query.get("by")] ? query.get("by") : null,
  };
  state.by = state.by ?? DEFAULT_GROUP[state.range];
  render(outlet, loadingState("Loading sites…"));
  const sites = await sitesOrExplain(outlet, scope, "No sites yet", "Energy is computed per site: register a site and its meters.");
  if (sites === null) return;
  if (!sites.some((s) => s.id === state.site)) state.site = sites[0].id;
  render(outlet, html`<div class="page-head"><div><h1>Plant energy <span class="zh">能耗管理</span></h1>
      <div class="sub">electricity from the site's meters · cost by time-of-use band (峰谷平) · kWh per good unit</div></div></div>
    ${siteToolbar(sites, state, RANGES, GROUPS)}
    <section class="grid kpis four" data-kpis>${loadingState()}</section>
    <section class="card"><div class="card-head"><h2>Time-of-use bands <span class="zh">峰谷平</span></h2>
      <span class="sub" data-tariff></span></div>
      <div class="table-wrap" data-bands>${loadingState()}</div></section>
    <section class="card"><div class="card-head"><h2 data-buckets-title>Consumption</h2>
      <span class="sub">local time of the site · estimated: spread evenly across a gap in the readings ·
        ≈ partly covered by readings · — no reading</span></div>
      <div class="table-wrap" data-buckets>${loadingState()}</div></section>
    <section class="card"><div class="card-head"><h2>Devices</h2>
      <span class="sub">the site's total adds up its meters; machines measured by power alone sit behind them</span></div>
      <div class="table-wrap" data-devices>${loadingState()}</div></section>
    <section class="card"><div class="card-head"><h2>Abnormal consumption <span class="zh">异常能耗</span></h2>
      <span class="sub">far above the same hour type of the last 4 weeks, or drawing power while idle</span></div>
      <div class="table-wrap" data-anomalies>${loadingState()}</div></section>`);

  let first = true;
  const poller = scope.poll(
    async (signal) => {
      const params = { site: state.site, from: `-${state.range}`, by: state.by };
      const [report, anomalies] = await Promise.all([
        plantEnergyApi.consumption(params, { signal }),
        plantEnergyApi.anomalies({ site: state.site, from: state.range === "24h" ? "-24h" : "-7d" }, { signal }),
      ]);
      if (!scope.active) return;
      first = false;
      outlet.querySelector("[data-zone]").textContent = `time zone ${report.timezone}`;
      outlet.querySelector("[data-tariff]").textContent = report.tariff;
      outlet.querySelector("[data-buckets-title]").textContent = `Consumption ${GROUPS[state.by].toLowerCase()}`;
      renderKpis(outlet.querySelector("[data-kpis]"), report);
      renderBands(outlet.querySelector("[data-bands]"), report);
      renderBuckets(outlet.querySelector("[data-buckets]"), report);
      renderDevices(outlet.querySelector("[data-devices]"), report);
      renderAnomalies(outlet.querySelector("[data-anomalies]"), anomalies, report.timezone);
    },
    60_000,
    {
      onError: (error) => first && render(outlet.querySelector("[data-kpis]"), html`<div class="card">${errorState(error, "Could not compute the energy figures")}</div>`),
    },
  );
  bindSiteToolbar(outlet, state, () => poller.now(), (s) => {
    s.by = DEFAULT_GROUP[s.range];
  });
}

function counted(included) {
  const meters = included.some((d) => d.source === "counter");
  const noun = meters ? "meter" : "machine";
  return `${formatInt(included.length)} ${noun}${included.length === 1 ? "" : "s"}`;
}

/** A bucket's kWh: "—" when no reading covers it (not a measured zero), "≈" when only partly. */
function bucketKwh(bucket, value) {
  if (bucket.coverage === 0) return "—";
  return bucket.coverage < 0.999 ? `≈ ${kwh(value)}` : kwh(value);
}

function renderKpis(host, report) {
  const t = report.totals;
  const included = report.devices.filter((d) => d.included);
  const estimated = t.estimated_kwh > 0 ? `${kwh(t.estimated_kwh)} kWh estimated across gaps` : "measured";
  render(host, html`
    <div class="card kpi hero" data-kpi="kwh"><div class="kpi-label">Electricity <span class="zh">用电量</span></div>
      <div class="kpi-value">${kwh(t.kwh)}<span class="unit">kWh</span></div>
      <div class="kpi-foot">${counted(included)} · ${estimated}</div></div>
    <div class="card kpi" data-kpi="tce"><div class="kpi-label">Standard coal <span class="zh">折标准煤</span></div>
      <div class="kpi-value">${formatNumber(t.tce, 3)}<span class="unit">tce</span></div>
      <div class="kpi-foot">0.1229 kgce/kWh (GB/T 2589, equivalent value)</div></div>
    <div class="card kpi" data-kpi="cost"><div class="kpi-label">Cost <span class="zh">电费</span></div>
      <div class="kpi-value">${formatNumber(t.cost, 2)}<span class="unit">${report.currency}</span></div>
      <div class="kpi-foot">${t.kwh > 0 ? `${formatNumber(t.cost / t.kwh, 3)} ${report.currency}/kWh on average` : "no consumption"}</div></div>
    <div class="card kpi" data-kpi="per-unit"><div class="kpi-label">Per good unit <span class="zh">单位产品电耗</span></div>
      <div class="kpi-value">${t.kwh_per_unit === null ? "—" : formatNumber(t.kwh_per_unit)}<span class="unit">kWh</span></div>
      <div class="kpi-foot">${t.good_units === null ? "no part counters at this site" : `${formatInt(t.good_units)} good units`}</div></div>`);
}

function renderBands(host, report) {
  const t = report.totals;
  render(host, html`<table class="data" data-band-rows><thead><tr><th>Period</th><th style="width:34%">Share</th>
      <th class="right">kWh</th><th class="right">Estimated</th><th class="right">Price</th><th class="right">Cost</th></tr></thead>
    <tbody>${t.bands.map((b) => html`<tr data-band="${b.period}"><td>${BANDS[b.period] || b.period}</td>
      <td>${meter(t.kwh > 0 ? b.kwh / t.kwh : null, { tone: BAND_TONE[b.period] })}</td>
      <td class="right num">${kwh(b.kwh)}</td><td class="right num">${b.estimated_kwh > 0 ? kwh(b.estimated_kwh) : "—"}</td>
      <td class="right num">${formatNumber(b.price, 2)} ${report.currency}/kWh</td>
      <td class="right num">${money(b.cost, report.currency)}</td></tr>`)}</tbody></table>`);
}

function bandKwh(bucket, period) {
  const band = bucket.bands.find((b) => b.period === period);
  return band ? band.kwh : null;
}

function renderBuckets(host, report) {
  if (!report.buckets.length) {
    render(host, emptyState("Nothing in this range"));
    return;
  }
  const periods = report.totals.bands.map((b) => b.period);
  const rows = [...report.buckets].reverse(); // the latest first
  render(host, html`<table class="data" data-bucket-rows><thead><tr><th>${GROUPS[report.by].replace("By ", "")}</th>
      <th class="right">kWh</th>${periods.map((p) => html`<th class="right">${(BANDS[p] || p).split(" ")[0]}</th>`)}
      <th class="right">Estimated</th><th class="right">Cost</th><th class="right">kWh / unit</th></tr></thead>
    <tbody>${rows.map((b) => html`<tr data-bucket="${b.start_ms}"><td class="mono nowrap">${when(b.start_ms, report.timezone, report.by)}</td>
      <td class="right num" title="${formatPercent(b.coverage)} of the time covered by readings">${bucketKwh(b, b.kwh)}</td>
      ${periods.map((p) => html`<td class="right num">${bucketKwh(b, bandKwh(b, p))}</td>`)}
      <td class="right num">${b.estimated_kwh > 0 ? kwh(b.estimated_kwh) : "—"}</td>
      <td class="right num">${b.coverage === 0 ? "—" : money(b.cost, report.currency)}</td>
      <td class="right num">${b.kwh_per_unit === null ? "—" : formatNumber(b.kwh_per_unit)}</td></tr>`)}</tbody></table>`);
}

function renderDevices(host, report) {
  const rows = report.devices.filter((d) => d.source !== null || d.good_units !== null);
  if (!rows.length) {
    render(host, emptyState("No meters or machines with energy data at this site", "Meters report an 'energy' counter (kWh); machines 'power' (kW)."));
    return;
  }
  rows.sort((a, b) => Number(b.included) - Number(a.included) || b.kwh - a.kwh || a.device_id.localeCompare(b.device_id));
  render(host, html`<table class="data" data-device-rows><thead><tr><th>Device</th><th>Source</th><th>In total</th>
      <th class="right">kWh</th><th class="right">Good units</th><th>Readings</th></tr></thead>
    <tbody>${rows.map((d) => html`<tr data-device="${d.device_id}">
      <td><a class="dev-name" href="#/devices/${encodeURIComponent(d.device_id)}">${d.name || d.device_id}</a><span class="dev-id">${d.device_id}${d.line ? ` · line ${d.line}` : ""}</span></td>
      <td>${d.source === "counter" ? "kWh counter" : d.source === "power" ? "power, integrated" : "—"}</td>
      <td>${d.included ? "yes" : "—"}</td>
      <td class="right num">${d.source === null ? "—" : kwh(d.kwh)}</td>
      <td class="right num">${d.good_units === null ? "—" : formatInt(d.good_units)}</td>
      <td class="sub">${qualityNote(d)}</td></tr>`)}</tbody></table>`);
}

function renderAnomalies(host, report, zone) {
  if (!report.anomalies.length) {
    render(host, emptyState("No abnormal consumption", "Nothing far above its baseline, no machine drawing power while idle."));
    return;
  }
  const rows = [...report.anomalies].reverse();
  render(host, html`<table class="data" data-anomaly-rows><thead><tr><th>From</th><th>Device</th><th>What</th>
      <th class="right">kWh</th><th class="right">Expected</th><th>Why</th></tr></thead>
    <tbody>${rows.map((a) => html`<tr data-anomaly="${a.anomaly.kind}">
      <td class="mono nowrap">${when(a.anomaly.start_ms, zone, "hour")}</td>
      <td>${a.device_id ?? html`<b>whole site</b>`}</td><td>${KIND[a.anomaly.kind] || a.anomaly.kind}</td>
      <td class="right num">${kwh(a.anomaly.kwh)}</td><td class="right num">${kwh(a.anomaly.expected_kwh)}</td>
      <td class="sub">${a.anomaly.detail}</td></tr>`)}</tbody></table>`);
}
