// National data center page (国家工业互联网大数据中心): one indicator over a range of periods,
// on a map-like grid of provinces, compared by province / prefecture / industry, over time, and
// drilled down from the nation to a province, a prefecture and its enterprises where the
// indicator's grade (and the caller's role) allows it. Reads /api/v1/data/*.
//
// The SVG line chart, the bar list, the value formats, the period arithmetic and this page's
// styles are exported for the energy page (pages/energy.js), which has the same needs.

import { ApiError, request } from "../api.js";
import { emptyState, errorState, loadingState } from "../components.js";
import { formatInt, formatNumber, formatPercent } from "../format.js";
import { html, render } from "../html.js";
import { currentRoute, updateQuery } from "../router.js";

const DATA = "/api/v1/data";

/** GET /api/v1/data/<path> with query parameters. */
export function dataApi(path, params = {}, opts = {}) {
  return request(`${DATA}/${path}`, { params, ...opts });
}

// -- styles ------------------------------------------------------------------------------------

// The data pages' own rules, added once to the document. They use the palette and spacing of
// styles.css (custom properties), so they follow the dashboard's theme.
const STYLES = `
.dc-controls { display: flex; flex-wrap: wrap; align-items: center; gap: var(--space-3) var(--space-4); padding: var(--space-3) var(--space-4); }
.dc-controls select[data-indicator] { max-width: 460px; min-width: 320px; }
.dc-controls .grade { margin-left: auto; }
.dc-note { font-size: var(--fs-sm); color: var(--text-muted); }
.dc-main { grid-template-columns: minmax(0, 1.75fr) minmax(360px, 1fr); align-items: start; }
.dc-side { display: grid; gap: var(--space-4); }
.dc-total .kpi-value { font-size: 32px; }
.dc-total .kpi-value .unit { font-size: 15px; }
.badge.grade-general { background: var(--state-online-soft); color: var(--state-online); }
.badge.grade-important { background: var(--sev-major-soft); color: var(--sev-major); }
.badge.grade-core { background: var(--sev-critical-soft); color: var(--sev-critical); }

.tilemap { display: grid; grid-template-columns: repeat(9, minmax(0, 1fr)); gap: 6px; }
.tile-prov {
  position: relative; min-height: 86px; border-radius: 6px; padding: 8px 9px; border: 1px solid transparent;
  display: flex; flex-direction: column; justify-content: space-between; cursor: pointer; text-align: left;
  font: inherit; color: var(--text); transition: transform 0.08s, box-shadow 0.12s;
}
.tile-prov:hover { transform: translateY(-1px); box-shadow: var(--shadow-pop); z-index: 1; }
.tile-prov:focus-visible { outline: 2px solid var(--focus); outline-offset: 1px; }
.tile-prov .nm { font-size: var(--fs-md); font-weight: 600; white-space: nowrap; overflow: hidden; text-overflow: ellipsis; }
.tile-prov .vl { font-size: var(--fs-md); font-weight: 600; font-variant-numeric: tabular-nums; white-space: nowrap; }
.tile-prov.dark { color: #fff; }
.tile-prov.dark .vl { color: rgba(255, 255, 255, 0.86); }
.tile-prov.none { background: var(--surface-muted); border: 1px dashed var(--border-strong); color: var(--text-faint); cursor: default; }
.tile-prov.none:hover { transform: none; box-shadow: none; }
.tile-prov[aria-pressed="true"] { box-shadow: 0 0 0 2px var(--navy-900); }
.scale { display: flex; align-items: center; gap: var(--space-2); font-size: var(--fs-xs); color: var(--text-muted); margin-top: var(--space-3); }
.scale .ramp { width: 180px; height: 8px; border-radius: 4px; }
.scale .nodata { width: 14px; height: 10px; border: 1px dashed var(--border-strong); border-radius: 3px; background: var(--surface-muted); margin-left: var(--space-3); }

.bars { display: grid; grid-template-columns: minmax(72px, max-content) minmax(0, 1fr) max-content; gap: 7px 10px; align-items: center; font-size: var(--fs-sm); }
.bars .lbl { white-space: nowrap; overflow: hidden; text-overflow: ellipsis; max-width: 190px; color: var(--text); }
.bars .lbl .code { color: var(--text-faint); font-family: var(--font-mono); font-size: var(--fs-xs); margin-left: 4px; }
.bars .track { height: 14px; background: var(--surface-muted); border-radius: 3px; overflow: hidden; }
.bars .bar { height: 100%; border-radius: 3px; background: var(--chart-1); min-width: 1px; }
.bars .val { font-variant-numeric: tabular-nums; text-align: right; color: var(--text-muted); }
.bars .more { grid-column: 1 / -1; color: var(--text-faint); font-size: var(--fs-xs); }

.compare { display: grid; grid-template-columns: minmax(0, 1fr) minmax(0, 1fr); }
.compare.wide { grid-template-columns: minmax(300px, 0.85fr) minmax(0, 1.6fr); }
.compare td .zh-name, .compare td .mono { white-space: nowrap; }
.kpi-value.name { font-size: 19px; line-height: 1.3; white-space: normal; }
.compare > div { min-width: 0; }
.compare > .chart-side { padding: var(--space-4); border-right: 1px solid var(--border); }
.compare .table-wrap { max-height: 480px; overflow-y: auto; }
.compare .table-wrap thead th { position: sticky; top: 0; z-index: 1; }
.compare .table-wrap tfoot td { background: var(--surface-muted); border-top: 1px solid var(--border); }
table.data tr[data-drill-to] { cursor: pointer; }
table.data th[data-sort] { cursor: pointer; user-select: none; white-space: nowrap; }
table.data th[data-sort]:hover { color: var(--text); }
table.data th[aria-sort="ascending"]::after { content: " ▲"; font-size: 9px; }
table.data th[aria-sort="descending"]::after { content: " ▼"; font-size: 9px; }
table.data td .zh-name { font-weight: 600; }
table.data td .code { display: block; font-family: var(--font-mono); font-size: var(--fs-xs); color: var(--text-faint); }
table.data .rank { color: var(--text-faint); width: 28px; }

.linechart svg { display: block; width: 100%; }
.linechart .grid-line { stroke: var(--chart-grid); }
.linechart .axis { fill: var(--chart-axis); font-size: 11px; }
.linechart .line { fill: none; stroke: var(--chart-1); stroke-width: 2; }
.linechart .area { fill: var(--chart-1); opacity: 0.08; }
.linechart circle { fill: #fff; stroke: var(--chart-1); stroke-width: 2; }

.path-crumbs { display: flex; flex-wrap: wrap; gap: 4px; align-items: center; font-size: var(--fs-sm); }
.path-crumbs button { border: 0; background: none; padding: 2px 4px; color: var(--accent); cursor: pointer; font: inherit; border-radius: 4px; }
.path-crumbs button:hover { background: var(--accent-soft); }
.path-crumbs .here { font-weight: 600; color: var(--text); padding: 2px 4px; }
.path-crumbs .sep { color: var(--text-faint); }
.notice { margin: var(--space-3) var(--space-4) 0; padding: var(--space-2) var(--space-3); border-radius: var(--radius-sm); font-size: var(--fs-sm); border: 1px solid; }
.notice.refused { background: var(--sev-minor-soft); border-color: #f3d58a; color: #7a5600; }
.notice.refused b { color: #5c4100; }
.drill-list { max-height: 330px; overflow-y: auto; }
.drill-level { font-size: var(--fs-xs); color: var(--text-faint); text-transform: uppercase; letter-spacing: 0.4px; padding: var(--space-3) var(--space-4) 0; }

.kpis.energy { grid-template-columns: repeat(4, minmax(0, 1fr)); }
@media (max-width: 1240px) {
  .dc-main, .compare { grid-template-columns: minmax(0, 1fr); }
  .compare > .chart-side { border-right: 0; border-bottom: 1px solid var(--border); }
}
`;

/** Add the data pages' styles to the document (once). */
export function ensureStyles() {
  if (document.querySelector("style[data-data-pages]")) return;
  const style = document.createElement("style");
  style.dataset.dataPages = "";
  style.textContent = STYLES;
  document.head.append(style);
}

// -- values ------------------------------------------------------------------------------------

const compact = new Intl.NumberFormat("en-US", { notation: "compact", maximumFractionDigits: 1 });
const UNIT_TEXT = { 1: "", m3: "m³", "tce/10^4 CNY": "tce/10⁴ CNY", CNY: "CNY" };

/** Whether an indicator's values are shares (0..1), shown as percentages. */
export function isShare(spec) {
  return spec.unit === "1" && (spec.aggregation === "ratio_of_sums" || spec.aggregation === "weighted_mean");
}

export function unitText(unit) {
  return unit in UNIT_TEXT ? UNIT_TEXT[unit] : unit;
}

/** An indicator's value: "97.4%" for shares, "12,345" for counts, "1.2M" when `short`. */
export function formatValue(spec, value, { short = false, unit = false } = {}) {
  if (value === null || value === undefined) return "—";
  if (isShare(spec)) return formatPercent(value);
  const text = short && Math.abs(value) >= 10_000 ? compact.format(value) : Number.isInteger(value) ? formatInt(value) : formatNumber(value);
  const u = unitText(spec.unit);
  return unit && u ? `${text} ${u}` : text;
}

/** A short province name: 江苏省 → 江苏, 新疆维吾尔自治区 → 新疆, 香港特别行政区 → 香港. */
export function shortName(name) {
  if (!name) return name;
  return name
    .replace(/(维吾尔|壮族|回族)?自治区$/, "")
    .replace(/特别行政区$/, "")
    .replace(/^(.{2,})[省市]$/, "$1");
}

// -- periods -----------------------------------------------------------------------------------

const pad = (n) => String(n).padStart(2, "0");

function parseStart(text) {
  const m = /^(\d{4})-(\d{2})-(\d{2})(?:T(\d{2}))?/.exec(text);
  return m ? { y: +m[1], mo: +m[2], d: +m[3], h: m[4] ? +m[4] : 0 } : null;
}

/** The period start `n` periods after `start` (negative: before), in the API's spelling. */
export function addPeriods(period, start, n) {
  const p = parseStart(start);
  if (!p) return start;
  let t;
  if (period === "month") t = new Date(Date.UTC(p.y, p.mo - 1 + n, 1));
  else if (period === "day") t = new Date(Date.UTC(p.y, p.mo - 1, p.d + n));
  else t = new Date(Date.UTC(p.y, p.mo - 1, p.d, p.h + n));
  const day = `${t.getUTCFullYear()}-${pad(t.getUTCMonth() + 1)}-${pad(t.getUTCDate())}`;
  return period === "hour" ? `${day}T${pad(t.getUTCHours())}:00` : day;
}

/** A period start as a label: "2026-01" (month), "01-15" (day), "08:00" (hour). */
export function periodLabel(period, start, { long = false } = {}) {
  if (!start) return "—";
  if (period === "month") return start.slice(0, 7);
  if (period === "day") return long ? start.slice(0, 10) : start.slice(5, 10);
  return long ? start.replace("T", " ") : start.slice(11, 16);
}

export const PERIODS = { month: "Month", day: "Day", hour: "Hour" };

/** The range [from, to] as the API's [start, end). */
export function rangeParams(period, from, to) {
  return { period, start: from, end: addPeriods(period, to, 1) };
}

// -- charts ------------------------------------------------------------------------------------

function niceStep(rough) {
  if (!(rough > 0)) return 1;
  const power = 10 ** Math.floor(Math.log10(rough));
  const f = rough / power;
  return (f <= 1 ? 1 : f <= 2 ? 2 : f <= 2.5 ? 2.5 : f <= 5 ? 5 : 10) * power;
}

/**
 * A line over categories (period starts) as SVG; null values leave gaps. `format` labels the
 * values (axis and hover titles). The host gets data-points = the number of points drawn.
 */
export function lineChart(host, { labels, titles = labels, values, format, height = 220, emptyText = "No data in this range" }) {
  const points = values.filter((v) => v !== null && v !== undefined);
  host.dataset.points = String(points.length);
  if (!points.length) {
    render(host, html`<div class="chart-empty" style="position:static;height:${height}px">${emptyText}</div>`);
    return;
  }
  const width = Math.max(host.clientWidth || 0, 320);
  let lo = Math.min(...points);
  let hi = Math.max(...points);
  if (lo > 0 && lo / (hi || 1) > 0.5) lo = lo * 0.9; // keep a level baseline readable
  if (lo >= 0 && lo / (hi || 1) <= 0.5) lo = 0;
  if (lo === hi) {
    hi += Math.abs(hi) * 0.1 || 1;
    lo -= lo === 0 ? 0 : Math.abs(lo) * 0.1;
  }
  const step = niceStep((hi - lo) / 4);
  lo = Math.floor(lo / step) * step;
  hi = Math.ceil(hi / step) * step;
  const ticks = [];
  for (let v = lo; v <= hi + step / 2; v += step) ticks.push(Number(v.toFixed(10)));
  const labelW = Math.max(...ticks.map((v) => format(v).length)) * 6.6 + 10;
  const pad = { l: labelW, r: 18, t: 12, b: 26 };
  const x = (i) => pad.l + (labels.length === 1 ? (width - pad.l - pad.r) / 2 : (i * (width - pad.l - pad.r)) / (labels.length - 1));
  const y = (v) => height - pad.b - ((v - lo) / (hi - lo || 1)) * (height - pad.t - pad.b);
  const runs = [];
  let run = [];
  values.forEach((v, i) => {
    if (v === null || v === undefined) {
      if (run.length) runs.push(run);
      run = [];
    } else run.push([x(i), y(v)]);
  });
  if (run.length) runs.push(run);
  const line = (r) => r.map(([px, py], i) => `${i ? "L" : "M"}${px.toFixed(1)},${py.toFixed(1)}`).join("");
  const area = (r) => `${line(r)}L${r[r.length - 1][0].toFixed(1)},${height - pad.b}L${r[0][0].toFixed(1)},${height - pad.b}Z`;
  const every = Math.max(1, Math.ceil((labels.length * 64) / (width - pad.l - pad.r)));
  const labelled = (i) => i === labels.length - 1 || (i % every === 0 && labels.length - 1 - i >= every);
  render(host, html`<svg viewBox="0 0 ${width} ${height}" height="${height}" role="img"
      aria-label="line chart, ${points.length} points">
    ${ticks.map((v) => html`<line class="grid-line" x1="${pad.l}" x2="${width - pad.r}" y1="${y(v).toFixed(1)}" y2="${y(v).toFixed(1)}"></line>
      <text class="axis" x="${pad.l - 8}" y="${(y(v) + 4).toFixed(1)}" text-anchor="end">${format(v)}</text>`)}
    ${labels.map((l, i) => (labelled(i)
      ? html`<text class="axis" x="${x(i).toFixed(1)}" y="${height - 8}" text-anchor="${labels.length > 1 && i === labels.length - 1 ? "end" : labels.length > 1 && i === 0 ? "start" : "middle"}">${l}</text>` : ""))}
    ${runs.map((r) => html`<path class="area" d="${area(r)}"></path><path class="line" d="${line(r)}"></path>`)}
    ${values.map((v, i) => (v === null || v === undefined ? "" : html`<circle data-point r="3.5" cx="${x(i).toFixed(1)}" cy="${y(v).toFixed(1)}"><title>${titles[i]}: ${format(v)}</title></circle>`))}
  </svg>`);
}

/**
 * Horizontal bars, largest first as given: [{ key, label, code?, value, text }]. At most `max`
 * bars; the rest are counted. The host gets data-bars = the number of bars drawn.
 */
export function barList(host, items, { max = 14, color = null, emptyText = "No data" } = {}) {
  const shown = items.filter((i) => i.value !== null && i.value !== undefined).slice(0, max);
  host.dataset.bars = String(shown.length);
  if (!shown.length) {
    render(host, emptyState(emptyText));
    return;
  }
  const top = Math.max(...shown.map((i) => Math.abs(i.value))) || 1;
  const rest = items.length - shown.length;
  render(host, html`<div class="bars" data-bar-chart>${shown.map((i) => html`
      <div class="lbl" title="${i.label}${i.code ? ` (${i.code})` : ""}">${i.label}${i.code && i.code !== i.label ? html`<span class="code">${i.code}</span>` : ""}</div>
      <div class="track"><div class="bar" data-bar="${i.key}" style="width:${((Math.abs(i.value) / top) * 100).toFixed(2)}%${color ? `;background:${color}` : ""}"></div></div>
      <div class="val">${i.text}</div>`)}
    ${rest > 0 ? html`<div class="more">+ ${rest} more in the table</div>` : ""}</div>`);
}

// -- the province grid -------------------------------------------------------------------------

// Provinces placed roughly where they lie (row, column) on a 9 x 8 grid: north-east at the top
// right, Xinjiang and Tibet to the west, Hainan and the special administrative regions south.
const TILE = {
  230000: [1, 9], 150000: [2, 6], 110000: [2, 7], 210000: [2, 8], 220000: [2, 9], 650000: [2, 2],
  620000: [3, 4], 640000: [3, 5], 140000: [3, 6], 130000: [3, 7], 120000: [3, 8],
  540000: [4, 2], 630000: [4, 3], 610000: [4, 5], 410000: [4, 6], 370000: [4, 7],
  510000: [5, 4], 500000: [5, 5], 420000: [5, 6], 340000: [5, 7], 320000: [5, 8], 310000: [5, 9],
  530000: [6, 4], 520000: [6, 5], 430000: [6, 6], 360000: [6, 7], 330000: [6, 8],
  450000: [7, 5], 440000: [7, 6], 350000: [7, 7], 710000: [7, 8],
  460000: [8, 5], 820000: [8, 6], 810000: [8, 7],
};
const RAMP = ["#dbe8fb", "#b5cff5", "#86afec", "#5a8ee0", "#3570d0", "#1f56b0", "#163f86"];

function rampColor(t) {
  const i = Math.max(0, Math.min(RAMP.length - 1, Math.round(t * (RAMP.length - 1))));
  return { color: RAMP[i], dark: i >= 3 };
}

function renderGrid(host, grid, selected) {
  const spec = grid.indicator;
  const { min, max } = grid;
  // Colour by rank (quantiles): a few large provinces would otherwise leave the rest pale.
  const sorted = grid.cells.map((c) => c.value).filter((v) => v !== null).sort((a, b) => a - b);
  const rank = (v) => (sorted.length > 1 ? sorted.indexOf(v) / (sorted.length - 1) : 1);
  const tiles = grid.cells.map((c) => {
    const place = TILE[c.region];
    const style = place ? `grid-row:${place[0]};grid-column:${place[1]}` : "";
    const label = `${c.name} ${formatValue(spec, c.value, { unit: true })}`;
    if (c.value === null) {
      return html`<div class="tile-prov none" style="${style}" data-province="${c.region}" data-value="" title="${c.name}: no data">
        <span class="nm">${shortName(c.name)}</span><span class="vl">no data</span></div>`;
    }
    const t = rank(c.value);
    const { color, dark } = rampColor(t);
    return html`<button type="button" class="tile-prov${dark ? " dark" : ""}" style="${style};background:${color}"
      data-province="${c.region}" data-value="${c.value}" title="${label}" aria-label="${label}"
      aria-pressed="${String(selected === c.region)}"><span class="nm">${shortName(c.name)}</span>
      <span class="vl">${formatValue(spec, c.value, { short: true })}</span></button>`;
  });
  render(host, html`<div class="tilemap" data-grid>${tiles}</div>
    <div class="scale"><span>${formatValue(spec, min, { short: true })}</span>
      <span class="ramp" style="background:linear-gradient(90deg, ${RAMP.join(", ")})"></span>
      <span>${formatValue(spec, max, { short: true })} ${isShare(spec) ? "" : unitText(spec.unit)}</span>
      <span class="faint">(colour by rank)</span>
      <span class="nodata"></span><span>no data</span></div>`);
}

// -- the page ----------------------------------------------------------------------------------

/** The province-level code of a region code (320500 → 320000). */
const provinceOf = (code) => (code ? `${code.slice(0, 2)}0000` : null);

const BY = { province: "Province", region: "Prefecture", industry: "Industry" };
const BY_PLURAL = { province: "provinces", region: "prefectures", industry: "industries" };
const LEVEL_TEXT = { province: "Provinces 省级", prefecture: "Prefectures 地市", enterprise: "Enterprises 企业" };

function gradeBadge(grade) {
  const zh = { general: "一般数据", important: "重要数据", core: "核心数据" }[grade];
  return html`<span class="badge plain grade-${grade}" data-grade="${grade}" title="MIIT data grade">${grade} · ${zh}</span>`;
}

function ruleText(spec) {
  return {
    sum: "sum over sources",
    max: "maximum over sources",
    weighted_mean: "weighted mean (Σ value·weight ÷ Σ weight)",
    ratio_of_sums: "ratio of sums (Σ numerator ÷ Σ denominator)",
    distinct_count: "distinct count of sources",
  }[spec.aggregation];
}

/** The indicator, period and range chooser (shared with the energy page). */
/**
 * Wire the period buttons and from/to pickers of ``rangeControls`` to ``state``; ``refresh``
 * is called with ``{periods: true}`` when the period changes (the pickers' choices change too).
 */
export function bindRangeControls(container, state, refresh) {
  container.addEventListener("click", (e) => {
    const button = e.target.closest("button[data-period]");
    if (!button || button.dataset.period === state.period) return;
    state.period = button.dataset.period;
    refresh({ periods: true });
  });
  container.addEventListener("change", (e) => {
    if (e.target.matches("[data-from]")) state.from = e.target.value;
    if (e.target.matches("[data-to]")) state.to = e.target.value;
    if (state.from > state.to) [state.from, state.to] = [state.to, state.from];
    render(container, rangeControls(state));
    refresh();
  });
}

export function rangeControls({ period, from, to, starts }) {
  const options = (chosen) => starts.map((s) => html`<option value="${s}" ${s === chosen ? "selected" : ""}>${periodLabel(period, s, { long: true })}</option>`);
  return html`<label class="field">Period
      <span class="segmented" role="group" aria-label="Period" data-periods>${Object.entries(PERIODS).map(
        ([key, label]) => html`<button type="button" data-period="${key}" aria-pressed="${String(key === period)}">${label}</button>`,
      )}</span></label>
    <label class="field">From <select data-from ${starts.length ? "" : "disabled"}>${options(from)}</select></label>
    <label class="field">To <select data-to ${starts.length ? "" : "disabled"}>${options(to)}</select></label>`;
}

export async function mount(outlet, _params, scope) {
  ensureStyles();
  render(outlet, loadingState("Loading the data center catalog…"));
  let catalog;
  try {
    catalog = await dataApi("catalog", {}, { signal: scope.signal });
  } catch (error) {
    if (error.name === "AbortError") return;
    render(outlet, html`<div class="page-head"><div><h1>National data center</h1></div></div>
      <div class="card">${errorState(error, "The data center cannot be read")}</div>`);
    return;
  }
  if (!scope.active) return;
  const specs = new Map(catalog.indicators.map((i) => [i.code, i]));
  const query = currentRoute().query;
  const state = {
    indicator: specs.has(query.get("indicator")) ? query.get("indicator") : "ENERGY_TCE",
    period: PERIODS[query.get("period")] ? query.get("period") : "month",
    from: query.get("from"),
    to: query.get("to"),
    by: BY[query.get("by")] ? query.get("by") : "province",
    drill: query.get("drill") || null,
    starts: [],
  };

  render(outlet, html`<div class="page-head"><div>
      <h1>National data center <span class="muted">国家工业互联网大数据中心</span></h1>
      <div class="sub">Indicators reported by enterprises through the regional and industry sub-centers ·
        catalog ${catalog.version} · per-enterprise figures up to ${catalog.max_drill_grade} data</div></div></div>
    <section class="card"><div class="dc-controls" data-controls>
      <label class="field">Indicator <select data-indicator>${catalog.indicators.map((i) => html`<option value="${i.code}"
        ${i.code === state.indicator ? "selected" : ""}>${i.name_zh} · ${i.name_en}${unitText(i.unit) ? ` (${unitText(i.unit)})` : ""}</option>`)}</select></label>
      <span data-range-controls></span>
      <span class="grade" data-grade-slot></span></div></section>
    <section class="grid dc-main">
      <div class="card"><div class="card-head"><h2>By province</h2><span class="sub">省级分布 · click a province to drill down</span></div>
        <div class="card-body" data-grid-host>${loadingState()}</div></div>
      <div class="dc-side">
        <div class="card kpi dc-total" data-total>${loadingState()}</div>
        <div class="card"><div class="card-head"><h2>Over time</h2><span class="sub" data-series-sub>last 10 periods</span></div>
          <div class="card-body linechart" data-series></div></div>
        <div class="card" data-drill-card><div class="card-head"><h2>Drill-down</h2><span class="sub">全国 → 省 → 地市 → 企业</span></div>
          <div data-drill>${loadingState()}</div></div>
      </div>
    </section>
    <section class="card"><div class="card-head"><h2>Comparison</h2><span class="sub" data-compare-sub></span>
      <div class="tools"><div class="segmented" role="group" aria-label="Group by" data-by>${Object.entries(BY).map(
        ([key, label]) => html`<button type="button" data-by-key="${key}" aria-pressed="${String(key === state.by)}">${label}</button>`,
      )}</div></div></div>
      <div class="compare"><div class="chart-side" data-bars></div><div class="table-wrap" data-table></div></div></section>`);

  const $ = (sel) => outlet.querySelector(sel);
  const spec = () => specs.get(state.indicator);
  const range = () => rangeParams(state.period, state.from, state.to);

  function saveQuery() {
    updateQuery({ indicator: state.indicator, period: state.period, from: state.from, to: state.to, by: state.by, drill: state.drill });
  }

  async function loadPeriods() {
    const body = await dataApi("periods", { indicator: state.indicator, period: state.period }, { signal: scope.signal });
    state.starts = body.starts;
    const last = state.starts[state.starts.length - 1] ?? null;
    if (!state.starts.includes(state.to)) state.to = last;
    if (!state.starts.includes(state.from) || state.from > state.to) state.from = state.to;
    render($("[data-range-controls]"), rangeControls(state));
  }

  async function refresh({ periods = false } = {}) {
    const s = spec();
    render($("[data-grade-slot]"), html`${gradeBadge(s.grade)} <span class="dc-note">${ruleText(s)}</span>`);
    try {
      if (periods || !state.starts.length) await loadPeriods();
    } catch (error) {
      if (error.name !== "AbortError") render($("[data-grid-host]"), errorState(error, "Could not load the periods"));
      return;
    }
    if (!scope.active) return;
    saveQuery();
    if (!state.to) {
      const none = emptyState(`No ${state.period}ly reports of ${s.name_en} yet`, "Reports arrive from the sub-centers; try another period or indicator.");
      for (const sel of ["[data-grid-host]", "[data-total]", "[data-bars]", "[data-table]", "[data-drill]"]) render($(sel), none);
      lineChart($("[data-series]"), { labels: [], values: [], format: String });
      return;
    }
    await Promise.all([loadGrid(), loadTotal(), loadSeries(), loadCompare(), loadDrill()]);
  }

  async function guarded(host, what, task) {
    try {
      await task();
    } catch (error) {
      if (error.name === "AbortError" || !scope.active) return;
      render(host, errorState(error, what));
    }
  }

  const loadGrid = () => guarded($("[data-grid-host]"), "Could not load the grid", async () => {
    const grid = await dataApi("grid", { indicator: state.indicator, ...range() }, { signal: scope.signal });
    if (scope.active) renderGrid($("[data-grid-host]"), grid, provinceOf(state.drill));
  });

  const loadTotal = () => guarded($("[data-total]"), "Could not load the total", async () => {
    const s = spec();
    const body = await dataApi("totals", { indicator: state.indicator, ...range() }, { signal: scope.signal });
    if (!scope.active) return;
    const row = body.rows[0];
    const value = row ? row.value : null;
    const u = isShare(s) ? "" : unitText(s.unit);
    const span = state.from === state.to ? periodLabel(state.period, state.to, { long: true })
      : `${periodLabel(state.period, state.from, { long: true })} – ${periodLabel(state.period, state.to, { long: true })}`;
    render($("[data-total]"), html`<div class="kpi-label">National total <span class="zh">全国</span></div>
      <div class="kpi-value" data-national-total>${formatValue(s, value)}${u ? html`<span class="unit">${u}</span>` : ""}</div>
      <div class="kpi-foot">${s.name_zh} · ${s.name_en} · ${span}${row && (s.aggregation === "ratio_of_sums" || s.aggregation === "weighted_mean")
        ? html`<br><span class="faint">${formatNumber(row.numerator)} ÷ ${formatNumber(row.denominator)}</span>` : ""}</div>`);
  });

  const loadSeries = () => guarded($("[data-series]"), "Could not load the series", async () => {
    const s = spec();
    const start = addPeriods(state.period, state.to, -9);
    const body = await dataApi("series", { indicator: state.indicator, period: state.period, start, end: addPeriods(state.period, state.to, 1) }, { signal: scope.signal });
    if (!scope.active) return;
    $("[data-series-sub]").textContent = `last 10 ${state.period}s to ${periodLabel(state.period, state.to, { long: true })}`;
    lineChart($("[data-series]"), {
      labels: body.points.map((p) => periodLabel(state.period, p.start)),
      titles: body.points.map((p) => periodLabel(state.period, p.start, { long: true })),
      values: body.points.map((p) => p.value),
      format: (v) => formatValue(s, v, { short: true }),
    });
  });

  let compareRows = [];
  let compareSort = { key: "value", dir: -1 };

  const loadCompare = () => guarded($("[data-table]"), "Could not load the comparison", async () => {
    const body = await dataApi("totals", { indicator: state.indicator, by: state.by, ...range() }, { signal: scope.signal });
    if (!scope.active) return;
    compareRows = body.rows;
    $("[data-compare-sub]").textContent = `${spec().name_zh} · ${compareRows.length} ${BY_PLURAL[state.by]} with data · click a column to sort`;
    drawCompare();
  });

  function drawCompare() {
    const s = spec();
    const { key, dir } = compareSort;
    const rows = [...compareRows].sort((a, b) => {
      const av = key === "name" ? a.name ?? a.key : a[key] ?? -Infinity;
      const bv = key === "name" ? b.name ?? b.key : b[key] ?? -Infinity;
      return (av < bv ? -1 : av > bv ? 1 : 0) * dir || String(a.key).localeCompare(String(b.key));
    });
    const byValue = [...compareRows].sort((a, b) => (b.value ?? -Infinity) - (a.value ?? -Infinity));
    barList($("[data-bars]"), byValue.map((r) => ({
      key: r.key, label: state.by === "province" ? shortName(r.name) : r.name ?? r.key, code: state.by === "province" ? null : r.key,
      value: r.value, text: formatValue(s, r.value, { short: true }),
    })), { emptyText: "No data in this range" });
    const ratio = s.aggregation === "ratio_of_sums" || s.aggregation === "weighted_mean";
    const th = (k, label, right = false) => html`<th data-sort="${k}" class="${right ? "right" : ""}"
      aria-sort="${k === key ? (dir > 0 ? "ascending" : "descending") : "none"}">${label}</th>`;
    const drillable = state.by !== "industry";
    render($("[data-table]"), html`<table class="data" data-compare-table><thead><tr><th class="rank">#</th>
        ${th("name", BY[state.by])}${th("value", `Value${isShare(s) || !unitText(s.unit) ? "" : ` (${unitText(s.unit)})`}`, true)}
        ${ratio ? html`${th("numerator", "Numerator", true)}${th("denominator", "Denominator", true)}` : ""}${th("parts", "Reports", true)}</tr></thead>
      <tbody>${rows.map((r, i) => html`<tr data-row="${r.key}" ${drillable ? html`data-drill-to="${r.key}" title="Drill down into ${r.name}"` : ""}>
        <td class="rank">${i + 1}</td><td><span class="zh-name">${r.name ?? r.key}</span><span class="code">${r.key}</span></td>
        <td class="right num">${formatValue(s, r.value)}</td>
        ${ratio ? html`<td class="right num">${formatNumber(r.numerator)}</td><td class="right num">${formatNumber(r.denominator)}</td>` : ""}
        <td class="right num">${formatInt(r.parts)}</td></tr>`)}</tbody></table>`);
  }

  let drillRefused = null;

  const loadDrill = () => guarded($("[data-drill]"), "Could not drill down", async () => {
    const host = $("[data-drill]");
    const s = spec();
    let body;
    try {
      body = await dataApi("drill", { indicator: state.indicator, region: state.drill, ...range() }, { signal: scope.signal });
      drillRefused = null;
    } catch (error) {
      if (!(error instanceof ApiError) || error.status !== 403 || !state.drill) throw error;
      // Refused below this place: show the reason, and what the level above had.
      drillRefused = { region: state.drill, reason: error.detail };
      const above = state.drill.endsWith("0000") ? null : `${state.drill.slice(0, 2)}0000`;
      body = await dataApi("drill", { indicator: state.indicator, region: above, ...range() }, { signal: scope.signal });
    }
    if (!scope.active) return;
    const refusedName = drillRefused ? catalog.regions.find((r) => r.code === drillRefused.region)?.name ?? drillRefused.region : null;
    const path = body.path;
    const crumbs = path.map((p, i) => (i === path.length - 1 && !drillRefused
      ? html`<span class="here">${p.name}</span>`
      : html`<button type="button" data-drill-path="${p.code ?? ""}">${p.name}</button><span class="sep">›</span>`));
    const items = [...body.rows].sort((a, b) => (b.value ?? -Infinity) - (a.value ?? -Infinity));
    const next = body.level === "enterprise" ? null : body.level;
    render(host, html`<div class="card-body" style="padding-bottom:0"><div class="path-crumbs" data-drill-crumbs>${crumbs}${drillRefused ? html`<span class="here">${refusedName}</span>` : ""}</div></div>
      ${drillRefused ? html`<div class="notice refused" data-drill-refused role="alert"><b>No enterprise figures for ${refusedName}.</b> ${drillRefused.reason}</div>`
        : !body.enterprise_drill.allowed && body.level !== "enterprise" ? html`<div class="notice refused" data-drill-hint>Enterprise level not available: ${body.enterprise_drill.reason}</div>` : ""}
      <div class="drill-level" data-drill-level="${drillRefused ? "refused" : body.level}">${LEVEL_TEXT[body.level]} · ${items.length}</div>
      <div class="drill-list"><table class="data" data-drill-table><thead><tr><th>${body.level === "enterprise" ? "Enterprise (credit code)" : "Name"}</th>
        <th class="right">Value</th></tr></thead>
        <tbody>${items.length ? items.map((r) => html`<tr data-drill-row="${r.key}" ${next ? html`data-drill-to="${r.key}" title="Drill down into ${r.name}"` : ""}>
          <td>${body.level === "enterprise" ? html`<span class="mono">${r.key}</span>` : html`<span class="zh-name">${r.name ?? r.key}</span><span class="code">${r.key}</span>`}</td>
          <td class="right num">${formatValue(s, r.value, { unit: true })}</td></tr>`)
          : html`<tr><td colspan="2" class="muted">No figures at this level for the range.</td></tr>`}</tbody></table></div>`);
  });

  function drillTo(code) {
    state.drill = code || null;
    saveQuery();
    const province = provinceOf(state.drill);
    for (const tile of outlet.querySelectorAll("button[data-province]")) tile.setAttribute("aria-pressed", String(tile.dataset.province === province));
    loadDrill();
  }

  // Events: one delegated listener per region of the page.
  $("[data-indicator]").addEventListener("change", (e) => {
    state.indicator = e.target.value;
    refresh({ periods: true });
  });
  bindRangeControls($("[data-range-controls]"), state, refresh);
  $("[data-by]").addEventListener("click", (e) => {
    const button = e.target.closest("button[data-by-key]");
    if (!button) return;
    state.by = button.dataset.byKey;
    for (const b of outlet.querySelectorAll("[data-by-key]")) b.setAttribute("aria-pressed", String(b === button));
    compareSort = { key: "value", dir: -1 };
    saveQuery();
    loadCompare();
  });
  $("[data-table]").addEventListener("click", (e) => {
    const th = e.target.closest("th[data-sort]");
    if (th) {
      const key = th.dataset.sort;
      compareSort = { key, dir: compareSort.key === key ? -compareSort.dir : key === "name" ? 1 : -1 };
      drawCompare();
      return;
    }
    const row = e.target.closest("tr[data-drill-to]");
    if (row) drillTo(row.dataset.drillTo);
  });
  $("[data-grid-host]").addEventListener("click", (e) => {
    const tile = e.target.closest("button[data-province]");
    if (tile) drillTo(tile.dataset.province);
  });
  $("[data-drill]").addEventListener("click", (e) => {
    const crumb = e.target.closest("[data-drill-path]");
    if (crumb) {
      drillTo(crumb.dataset.drillPath);
      return;
    }
    const row = e.target.closest("tr[data-drill-to]");
    if (row) drillTo(row.dataset.drillTo);
  });
  let resizeTimer = null;
  scope.listen(window, "resize", () => {
    clearTimeout(resizeTimer);
    resizeTimer = setTimeout(() => scope.active && state.to && loadSeries(), 150);
  });

  await refresh({ periods: true });
}
