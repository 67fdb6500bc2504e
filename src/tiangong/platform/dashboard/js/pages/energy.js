// Energy industry view (能源行业): the consumption and economic indicators of energy enterprises
// (coal mining, oil and gas extraction, fuel processing, power and heat, gas, water supply),
// aggregated per industry and per enterprise and compared by intensity, tonnes of standard coal
// per 10 000 CNY of output value, computed from the sums (never a mean of intensities).
// Reads /api/v1/data/energy; per-enterprise rows need a platform administrator's token.

import { ApiError } from "../api.js";
import { emptyState, errorState, loadingState } from "../components.js";
import { formatInt, formatNumber, formatPercent } from "../format.js";
import { html, render } from "../html.js";
import { currentRoute, updateQuery } from "../router.js";
import { PERIODS, barList, bindRangeControls, dataApi, ensureStyles, periodLabel, rangeControls, rangeParams } from "./national.js";

const compact = new Intl.NumberFormat("en-US", { notation: "compact", maximumFractionDigits: 1 });
const METRICS = {
  intensity: { label: "Intensity", zh: "单位产值能耗", unit: "tce/10⁴ CNY" },
  energy_tce: { label: "Consumption", zh: "综合能源消费量", unit: "tce" },
  output_value: { label: "Output value", zh: "工业总产值", unit: "CNY" },
};

function metricText(key, value, { short = false } = {}) {
  if (value === null || value === undefined) return "—";
  if (key === "intensity") return formatNumber(value, 3);
  if (short && value >= 10_000) return compact.format(value);
  return formatInt(value);
}

/** A sortable table of energy rows; `byIndustry` shows industry names, else enterprise ids. */
class EnergyTable {
  constructor(host, barsHost, { byIndustry, total }) {
    this.host = host;
    this.barsHost = barsHost;
    this.byIndustry = byIndustry;
    this.total = total;
    this.sort = { key: "intensity", dir: -1 };
    this.rows = [];
    host.addEventListener("click", (e) => {
      const th = e.target.closest("th[data-sort]");
      if (!th) return;
      const key = th.dataset.sort;
      this.sort = { key, dir: this.sort.key === key ? -this.sort.dir : key === "key" || key === "industry" ? 1 : -1 };
      this.draw();
    });
  }

  setRows(rows, total) {
    this.rows = rows;
    this.total = total;
    this.draw();
  }

  draw() {
    const { key, dir } = this.sort;
    const rows = [...this.rows].sort((a, b) => {
      const av = a[key] ?? -Infinity;
      const bv = b[key] ?? -Infinity;
      return (av < bv ? -1 : av > bv ? 1 : 0) * dir || a.key.localeCompare(b.key);
    });
    // The bars follow the table's sort when it is by a number, else intensity.
    const metric = METRICS[key] ? key : "intensity";
    barList(this.barsHost, rows.filter((r) => r[metric] !== null).map((r) => ({
      key: r.key,
      label: this.byIndustry ? r.name : r.key,
      code: this.byIndustry ? r.key : r.industry,
      value: r[metric],
      text: `${metricText(metric, r[metric], { short: true })} ${METRICS[metric].unit}`,
    })), { max: this.byIndustry ? 10 : 15, color: metric === "intensity" ? "var(--chart-3)" : metric === "energy_tce" ? "var(--chart-1)" : "var(--chart-2)" });
    this.barsHost.dataset.metric = metric;
    const th = (k, label, right = true) => html`<th data-sort="${k}" class="${right ? "right" : ""}"
      aria-sort="${k === key ? (dir > 0 ? "ascending" : "descending") : "none"}">${label}</th>`;
    const totalTce = this.total.energy_tce || 0;
    render(this.host, html`<table class="data" data-energy-table="${this.byIndustry ? "industry" : "source"}"><thead><tr>
        ${this.byIndustry ? th("key", "Industry", false) : html`${th("key", "Enterprise", false)}${th("industry", "Industry", false)}`}
        ${th("energy_tce", "Consumption tce")}${th("output_value", "Output CNY")}${th("intensity", "Intensity")}
        <th class="right">Share</th></tr></thead>
      <tbody>${rows.map((r) => html`<tr data-energy-row="${r.key}">
        ${this.byIndustry ? html`<td><span class="zh-name">${r.name}</span><span class="code">${r.key}</span></td>`
          : html`<td class="mono">${r.key}</td><td class="mono" title="${r.industry_name ?? ""}">${r.industry}</td>`}
        <td class="right num">${formatInt(r.energy_tce)}</td><td class="right num">${formatInt(r.output_value)}</td>
        <td class="right num"><b>${metricText("intensity", r.intensity)}</b></td>
        <td class="right num">${totalTce ? formatPercent(r.energy_tce / totalTce) : "—"}</td></tr>`)}</tbody>
      <tfoot><tr><td ${this.byIndustry ? "" : html`colspan="2"`}><b>All energy industries</b></td>
        <td class="right num"><b>${formatInt(this.total.energy_tce)}</b></td><td class="right num"><b>${formatInt(this.total.output_value)}</b></td>
        <td class="right num"><b>${metricText("intensity", this.total.intensity)}</b></td><td class="right num">100.0%</td></tr></tfoot></table>`);
  }
}

export async function mount(outlet, _params, scope) {
  ensureStyles();
  const query = currentRoute().query;
  const state = {
    period: PERIODS[query.get("period")] ? query.get("period") : "month",
    from: query.get("from"),
    to: query.get("to"),
    starts: [],
  };
  render(outlet, html`<div class="page-head"><div>
      <h1>Energy industry <span class="muted">能源行业</span></h1>
      <div class="sub">Consumption and economic indicators of energy enterprises (B06–B07 mining, C25 fuel processing,
        D44–D46 power, gas and water) · intensity = Σ tce ÷ (Σ output value ÷ 10 000)</div></div></div>
    <section class="card"><div class="dc-controls" data-range-controls>${loadingState()}</div></section>
    <section class="grid kpis energy" data-energy-kpis>${loadingState()}</section>
    <section class="card"><div class="card-head"><h2>Per energy industry</h2><span class="sub">按行业 · intensity in tce per 10⁴ CNY of output · click a column to sort</span></div>
      <div class="compare wide"><div class="chart-side" data-industry-bars></div><div class="table-wrap" data-industry-table></div></div></section>
    <section class="card"><div class="card-head"><h2>Per enterprise</h2><span class="sub" data-source-sub>按企业</span></div>
      <div data-source-body><div class="compare wide"><div class="chart-side" data-source-bars></div><div class="table-wrap" data-source-table></div></div></div></section>`);
  const $ = (sel) => outlet.querySelector(sel);
  const industries = new EnergyTable($("[data-industry-table]"), $("[data-industry-bars]"), { byIndustry: true, total: {} });
  const sources = new EnergyTable($("[data-source-table]"), $("[data-source-bars]"), { byIndustry: false, total: {} });

  async function loadPeriods() {
    const body = await dataApi("periods", { indicator: "ENERGY_TCE", period: state.period }, { signal: scope.signal });
    state.starts = body.starts;
    const last = state.starts[state.starts.length - 1] ?? null;
    if (!state.starts.includes(state.to)) state.to = last;
    if (!state.starts.includes(state.from) || state.from > state.to) state.from = state.to;
    render($("[data-range-controls]"), rangeControls(state));
  }

  async function refresh({ periods = false } = {}) {
    try {
      if (periods) await loadPeriods();
      if (!scope.active) return;
      updateQuery({ period: state.period, from: state.from, to: state.to });
      if (!state.to) {
        render($("[data-energy-kpis]"), html`<div class="card" style="grid-column:1/-1">${emptyState(
          `No ${state.period}ly energy reports yet`, "Energy enterprises report through their sub-centers; try another period.")}</div>`);
        return;
      }
      const range = rangeParams(state.period, state.from, state.to);
      const body = await dataApi("energy", { ...range, by: "industry" }, { signal: scope.signal });
      if (!scope.active) return;
      renderKpis(body);
      industries.setRows(body.rows, body.total);
      await loadSources(range, body.total);
    } catch (error) {
      if (error.name === "AbortError" || !scope.active) return;
      render($("[data-energy-kpis]"), html`<div class="card" style="grid-column:1/-1">${errorState(error, "Could not load the energy view")}</div>`);
    }
  }

  async function loadSources(range, total) {
    try {
      const body = await dataApi("energy", { ...range, by: "source" }, { signal: scope.signal });
      if (!scope.active) return;
      $("[data-source-sub]").textContent = `按企业 · ${body.rows.length} energy enterprises · click a column to sort`;
      sources.setRows(body.rows, total);
      const count = $("[data-energy-kpis] [data-enterprises]");
      if (count) count.textContent = formatInt(body.rows.length);
    } catch (error) {
      if (!(error instanceof ApiError) || error.status !== 403) throw error;
      render($("[data-source-body]"), html`<div class="notice refused" data-source-refused role="alert" style="margin-bottom:var(--space-4)">
        <b>Per-enterprise figures are not shown.</b> ${error.detail}</div>`);
    }
  }

  function renderKpis(body) {
    const t = body.total;
    const span = state.from === state.to ? periodLabel(state.period, state.to, { long: true })
      : `${periodLabel(state.period, state.from, { long: true })} – ${periodLabel(state.period, state.to, { long: true })}`;
    const top = body.rows[0];
    render($("[data-energy-kpis]"), html`
      <div class="card kpi hero"><div class="kpi-label">Energy intensity <span class="zh">单位产值能耗</span></div>
        <div class="kpi-value" data-energy-intensity>${metricText("intensity", t.intensity)}<span class="unit">tce/10⁴ CNY</span></div>
        <div class="kpi-foot">all energy industries · ${span}</div></div>
      <div class="card kpi"><div class="kpi-label">Consumption <span class="zh">综合能源消费量</span></div>
        <div class="kpi-value">${metricText("energy_tce", t.energy_tce, { short: true })}<span class="unit">tce</span></div>
        <div class="kpi-foot">${formatInt(t.energy_tce)} tonnes of standard coal</div></div>
      <div class="card kpi"><div class="kpi-label">Output value <span class="zh">工业总产值</span></div>
        <div class="kpi-value">${metricText("output_value", t.output_value, { short: true })}<span class="unit">CNY</span></div>
        <div class="kpi-foot">at current prices</div></div>
      <div class="card kpi"><div class="kpi-label">Most energy-intensive <span class="zh">能耗强度最高</span></div>
        <div class="kpi-value name" data-top-industry>${top ? top.name : "—"}</div>
        <div class="kpi-foot">${top ? html`${top.key} · ${metricText("intensity", top.intensity)} tce/10⁴ CNY · <span data-enterprises>—</span> enterprises reporting` : "no data"}</div></div>`);
  }

  bindRangeControls($("[data-range-controls]"), state, refresh);

  await refresh({ periods: true });
}
