// Time-series line chart on <canvas>, written for this dashboard (no chart library).
//
// What it has to do well: a time axis whose labels fit the range (seconds for 15 minutes,
// days for a week), value labels with the unit, a hover tooltip, gaps where a device was
// offline instead of a straight line across the outage, and sensible output for one point or
// none (a fresh demo has little history). Enum metrics ("idle", "running") are drawn as steps
// against their labels. The palette comes from the CSS custom properties --chart-*.

import {
  formatClock,
  formatDateTime,
  formatMeasurement,
  formatMonthDay,
  formatNumber,
  formatPercent,
  formatUnit,
} from "./format.js";
import { html, render } from "./html.js";

const SECOND = 1000;
const MINUTE = 60 * SECOND;
const HOUR = 60 * MINUTE;
const DAY = 24 * HOUR;
const TIME_STEPS = [
  SECOND, 2 * SECOND, 5 * SECOND, 10 * SECOND, 15 * SECOND, 30 * SECOND,
  MINUTE, 2 * MINUTE, 5 * MINUTE, 10 * MINUTE, 15 * MINUTE, 30 * MINUTE,
  HOUR, 2 * HOUR, 3 * HOUR, 6 * HOUR, 12 * HOUR, DAY, 2 * DAY, 7 * DAY,
];
const PAD = { top: 12, right: 16, bottom: 26, left: 12 };

function cssVar(name, fallback) {
  const value = getComputedStyle(document.documentElement).getPropertyValue(name).trim();
  return value || fallback;
}

/** The chart palette from the stylesheet, in series order. */
export function chartColors() {
  return ["--chart-1", "--chart-2", "--chart-3", "--chart-4", "--chart-5", "--chart-6"].map((v) => cssVar(v, "#1f63d6"));
}

function niceStep(rough) {
  if (!(rough > 0)) return 1;
  const power = 10 ** Math.floor(Math.log10(rough));
  const f = rough / power;
  return (f <= 1 ? 1 : f <= 2 ? 2 : f <= 2.5 ? 2.5 : f <= 5 ? 5 : 10) * power;
}

function stepDecimals(step) {
  for (let d = 0; d < 8; d += 1) {
    if (Math.abs(Math.round(step * 10 ** d) - step * 10 ** d) < 1e-6) return d;
  }
  return 8;
}

// Local-time alignment of ticks: 10:00, 10:15... rather than multiples of the step in UTC.
function tzOffsetMs(t) {
  return -new Date(t).getTimezoneOffset() * MINUTE;
}

function nearestIndex(points, t) {
  let lo = 0;
  let hi = points.length - 1;
  while (lo < hi) {
    const mid = (lo + hi) >> 1;
    if (points[mid][0] < t) lo = mid + 1;
    else hi = mid;
  }
  if (lo > 0 && Math.abs(points[lo - 1][0] - t) <= Math.abs(points[lo][0] - t)) return lo - 1;
  return lo;
}

function hexToRgba(color, alpha) {
  const m = /^#([0-9a-f]{6})$/i.exec(color);
  if (!m) return color;
  const n = parseInt(m[1], 16);
  return `rgba(${(n >> 16) & 255}, ${(n >> 8) & 255}, ${n & 255}, ${alpha})`;
}

export class TimeChart {
  /**
   * @param {HTMLElement} host where the chart goes (emptied)
   * @param {object} options
   *   height: plot height in px; kind: "number" | "percent" | "enum"; unit: thing-model unit;
   *   labels: enum labels (kind "enum"); clamp: [min, max] the axis never exceeds (rates: [0, 1]);
   *   emptyText: shown without data; minSpanMs: the shortest time range drawn.
   */
  constructor(host, options = {}) {
    this.host = host;
    this.options = {
      height: 280,
      kind: "number",
      unit: null,
      labels: null,
      clamp: null,
      emptyText: "No data in this range",
      minSpanMs: 10 * SECOND,
      ...options,
    };
    this.series = [];
    this.hoverX = null;
    render(host, html`<div class="chart-legend" hidden></div>
      <div class="chart" style="height:${this.options.height}px">
        <canvas role="img"></canvas>
        <div class="chart-empty" hidden></div>
        <div class="chart-tooltip" hidden></div>
      </div>`);
    this.legend = host.querySelector(".chart-legend");
    this.plot = host.querySelector(".chart");
    this.canvas = host.querySelector("canvas");
    this.empty = host.querySelector(".chart-empty");
    this.tooltip = host.querySelector(".chart-tooltip");
    this.resizeObserver = new ResizeObserver(() => this.draw());
    this.resizeObserver.observe(this.plot);
    this.canvas.addEventListener("mousemove", (e) => {
      const rect = this.canvas.getBoundingClientRect();
      this.hoverX = e.clientX - rect.left;
      this.draw();
    });
    this.canvas.addEventListener("mouseleave", () => {
      this.hoverX = null;
      this.draw();
    });
  }

  /** Change kind/unit/labels (a new metric) without rebuilding the chart. */
  configure(options) {
    Object.assign(this.options, options);
  }

  /**
   * @param {object} data
   *   series: [{ name, color?, points: [[epochMs, value]], dashed? }] (points sorted by time);
   *   start, end: the requested range (ms); gapMs: a longer silence breaks the line.
   */
  setData({ series, start = null, end = null, gapMs = Infinity }) {
    const colors = chartColors();
    const labels = this.options.labels;
    this.series = series.map((s, i) => ({
      name: s.name,
      dashed: Boolean(s.dashed),
      color: s.color || colors[i % colors.length],
      points: s.points
        .map(([t, v]) => [t, this.toNumber(v, labels)])
        .filter(([, v]) => v !== null && Number.isFinite(v)),
    }));
    this.start = start;
    this.end = end;
    this.gapMs = gapMs;
    const count = this.series.reduce((n, s) => n + s.points.length, 0);
    this.host.dataset.points = String(count);
    this.renderLegend();
    this.draw();
  }

  toNumber(value, labels) {
    if (value === null || value === undefined) return null;
    if (typeof value === "boolean") return value ? 1 : 0;
    if (typeof value === "string") {
      const i = labels ? labels.indexOf(value) : -1;
      return i >= 0 ? i : null;
    }
    return value;
  }

  renderLegend() {
    const show = this.series.length > 1;
    this.legend.hidden = !show;
    if (!show) return;
    render(this.legend, html`${this.series.map(
      (s) => html`<span><i class="${s.dashed ? "dashed" : ""}" style="background:${s.color};color:${s.color}"></i>${s.name}</span>`,
    )}`);
  }

  formatValue(v) {
    const { kind, unit, labels } = this.options;
    if (kind === "percent") return formatPercent(v);
    if (kind === "enum" && labels) {
      const i = Math.round(v);
      return Math.abs(v - i) < 1e-9 && labels[i] !== undefined ? labels[i] : formatNumber(v);
    }
    const u = formatUnit(unit);
    const text = formatMeasurement(v, "float");
    return u ? `${text} ${u}` : text;
  }

  axisLabel(v, step) {
    const { kind, unit, labels } = this.options;
    if (kind === "percent") return `${formatNumber(v * 100, Math.max(0, stepDecimals(step * 100)))}%`;
    if (kind === "enum" && labels) return labels[Math.round(v)] ?? "";
    const u = formatUnit(unit);
    const text = formatNumber(v, Math.min(stepDecimals(step), 3));
    return u ? `${text} ${u}` : text;
  }

  /** The time range drawn: the requested one, trimmed to the data when history is short. */
  xDomain() {
    let lo = Infinity;
    let hi = -Infinity;
    for (const s of this.series) {
      if (s.points.length) {
        lo = Math.min(lo, s.points[0][0]);
        hi = Math.max(hi, s.points[s.points.length - 1][0]);
      }
    }
    const end = this.end ?? hi;
    // A fresh demo has minutes of a 24 h range: fit the data that exists rather than draw a
    // sliver at the right edge (the page says from when the data starts).
    let start = this.start === null ? lo : Math.max(this.start, lo);
    const minSpan = Math.min(this.options.minSpanMs, this.end !== null && this.start !== null ? this.end - this.start : Infinity);
    if (end - start < minSpan) start = end - minSpan;
    return [start, end];
  }

  yDomain(plotHeight, x0, x1) {
    const { kind, labels, clamp } = this.options;
    if (kind === "enum" && labels) {
      const ticks = labels.map((_, i) => i);
      return { lo: -0.5, hi: labels.length - 0.5, ticks, step: 1 };
    }
    let lo = Infinity;
    let hi = -Infinity;
    for (const s of this.series) {
      for (const [t, v] of s.points) {
        if (t >= x0 && t <= x1) {
          if (v < lo) lo = v;
          if (v > hi) hi = v;
        }
      }
    }
    if (lo === Infinity) return null;
    if (lo === hi) {
      const pad = Math.abs(lo) * 0.05 || (kind === "percent" ? 0.05 : 1);
      lo -= pad;
      hi += pad;
    }
    const target = Math.max(2, Math.floor(plotHeight / 48));
    const step = niceStep((hi - lo) / target);
    lo = Math.floor(lo / step + 1e-9) * step;
    hi = Math.ceil(hi / step - 1e-9) * step;
    if (clamp) {
      lo = Math.max(lo, clamp[0]);
      hi = Math.min(hi, clamp[1]);
    }
    const ticks = [];
    for (let v = Math.ceil(lo / step - 1e-9) * step; v <= hi + step * 1e-6; v += step) ticks.push(Number(v.toFixed(10)));
    return { lo, hi, ticks, step };
  }

  timeTicks(x0, x1, width) {
    const span = x1 - x0;
    const maxTicks = Math.max(2, Math.floor(width / 92));
    const step = TIME_STEPS.find((s) => span / s <= maxTicks) ?? TIME_STEPS[TIME_STEPS.length - 1];
    const off = tzOffsetMs(x0);
    const ticks = [];
    for (let t = Math.ceil((x0 + off) / step) * step - off; t <= x1; t += step) ticks.push(t);
    const label = (t) => {
      if (step >= DAY) return formatMonthDay(t);
      const local = new Date(t);
      if (local.getHours() === 0 && local.getMinutes() === 0 && local.getSeconds() === 0 && step >= HOUR) return formatMonthDay(t);
      return formatClock(t, step < MINUTE);
    };
    return ticks.map((t) => [t, label(t)]);
  }

  draw() {
    const width = this.plot.clientWidth;
    const height = this.plot.clientHeight;
    if (!width || !height) return;
    const dpr = window.devicePixelRatio || 1;
    if (this.canvas.width !== Math.round(width * dpr) || this.canvas.height !== Math.round(height * dpr)) {
      this.canvas.width = Math.round(width * dpr);
      this.canvas.height = Math.round(height * dpr);
    }
    const ctx = this.canvas.getContext("2d");
    ctx.setTransform(dpr, 0, 0, dpr, 0, 0);
    ctx.clearRect(0, 0, width, height);

    const total = this.series.reduce((n, s) => n + s.points.length, 0);
    this.empty.hidden = total > 0;
    if (total === 0) {
      render(this.empty, html`<div>${this.options.emptyText}</div>`);
      this.tooltip.hidden = true;
      this.canvas.setAttribute("aria-label", "chart without data");
      return;
    }

    const font = getComputedStyle(document.body).fontFamily;
    const axisColor = cssVar("--chart-axis", "#8b96a8");
    const gridColor = cssVar("--chart-grid", "#e9edf3");
    const [x0, x1] = this.xDomain();
    const plotH = height - PAD.top - PAD.bottom;
    const y = this.yDomain(plotH, x0, x1);
    if (!y) return;

    ctx.font = `11px ${font}`;
    const labelWidth = Math.max(...y.ticks.map((v) => ctx.measureText(this.axisLabel(v, y.step)).width), 20);
    const left = PAD.left + Math.ceil(labelWidth) + 8;
    const right = width - PAD.right;
    const top = PAD.top;
    const bottom = height - PAD.bottom;
    const sx = (t) => left + ((t - x0) / (x1 - x0 || 1)) * (right - left);
    const sy = (v) => bottom - ((v - y.lo) / (y.hi - y.lo || 1)) * (bottom - top);

    // Horizontal grid and value labels.
    ctx.textAlign = "right";
    ctx.textBaseline = "middle";
    ctx.lineWidth = 1;
    for (const v of y.ticks) {
      const py = Math.round(sy(v)) + 0.5;
      ctx.strokeStyle = gridColor;
      ctx.beginPath();
      ctx.moveTo(left, py);
      ctx.lineTo(right, py);
      ctx.stroke();
      ctx.fillStyle = axisColor;
      ctx.fillText(this.axisLabel(v, y.step), left - 8, py);
    }

    // Time axis.
    ctx.strokeStyle = cssVar("--border-strong", "#c8d1de");
    ctx.beginPath();
    ctx.moveTo(left, bottom + 0.5);
    ctx.lineTo(right, bottom + 0.5);
    ctx.stroke();
    ctx.textAlign = "center";
    ctx.textBaseline = "top";
    ctx.fillStyle = axisColor;
    for (const [t, label] of this.timeTicks(x0, x1, right - left)) {
      const px = Math.round(sx(t)) + 0.5;
      if (px < left || px > right) continue;
      ctx.beginPath();
      ctx.moveTo(px, bottom);
      ctx.lineTo(px, bottom + 4);
      ctx.stroke();
      const w = ctx.measureText(label).width / 2;
      ctx.fillText(label, Math.min(Math.max(px, left + w), right - w), bottom + 7);
    }

    // Series, clipped to the plot area.
    ctx.save();
    ctx.beginPath();
    ctx.rect(left, top - 2, right - left, bottom - top + 4);
    ctx.clip();
    const step = this.options.kind === "enum";
    const fill = this.series.length === 1 && !step;
    for (const s of this.series) {
      const runs = this.runs(s.points, x0, x1);
      ctx.strokeStyle = s.color;
      ctx.fillStyle = s.color;
      ctx.lineWidth = 1.75;
      ctx.lineJoin = "round";
      ctx.setLineDash(s.dashed ? [5, 4] : []);
      for (const run of runs) {
        if (run.length === 1) {
          ctx.beginPath();
          ctx.arc(sx(run[0][0]), sy(run[0][1]), 2.5, 0, Math.PI * 2);
          ctx.fill();
          continue;
        }
        ctx.beginPath();
        run.forEach(([t, v], i) => {
          if (i === 0) ctx.moveTo(sx(t), sy(v));
          else if (step) {
            ctx.lineTo(sx(t), sy(run[i - 1][1]));
            ctx.lineTo(sx(t), sy(v));
          } else ctx.lineTo(sx(t), sy(v));
        });
        ctx.stroke();
        if (fill) {
          const gradient = ctx.createLinearGradient(0, top, 0, bottom);
          gradient.addColorStop(0, hexToRgba(s.color, 0.16));
          gradient.addColorStop(1, hexToRgba(s.color, 0.01));
          ctx.lineTo(sx(run[run.length - 1][0]), bottom);
          ctx.lineTo(sx(run[0][0]), bottom);
          ctx.closePath();
          ctx.fillStyle = gradient;
          ctx.fill();
          ctx.fillStyle = s.color;
        }
      }
    }
    ctx.restore();
    ctx.setLineDash([]);
    this.canvas.setAttribute("aria-label", `chart of ${this.series.map((s) => s.name).join(", ")}, ${total} points`);
    this.drawHover(ctx, { left, right, top, bottom, sx, sy, x0, x1 });
  }

  /** Split points into runs with no silence longer than gapMs (a device offline). */
  runs(points, x0, x1) {
    const runs = [];
    let current = [];
    let prev = null;
    for (const p of points) {
      if (p[0] < x0 - this.gapMs || p[0] > x1) continue;
      if (prev !== null && p[0] - prev > this.gapMs) {
        runs.push(current);
        current = [];
      }
      current.push(p);
      prev = p[0];
    }
    if (current.length) runs.push(current);
    return runs;
  }

  drawHover(ctx, g) {
    if (this.hoverX === null || this.hoverX < g.left || this.hoverX > g.right) {
      this.tooltip.hidden = true;
      return;
    }
    const t = g.x0 + ((this.hoverX - g.left) / (g.right - g.left)) * (g.x1 - g.x0);
    // Snap to the nearest sample of any series, then show every series at that time.
    let best = null;
    for (const s of this.series) {
      if (!s.points.length) continue;
      const p = s.points[nearestIndex(s.points, t)];
      if (best === null || Math.abs(p[0] - t) < Math.abs(best - t)) best = p[0];
    }
    if (best === null || best < g.x0 || best > g.x1) {
      this.tooltip.hidden = true;
      return;
    }
    const rows = [];
    const tolerance = Math.max((g.x1 - g.x0) / 200, Math.min(this.gapMs, 2 * MINUTE));
    for (const s of this.series) {
      if (!s.points.length) continue;
      const p = s.points[nearestIndex(s.points, best)];
      if (Math.abs(p[0] - best) > tolerance) continue;
      rows.push({ s, p });
    }
    const px = g.sx(best);
    ctx.strokeStyle = cssVar("--chart-axis", "#8b96a8");
    ctx.setLineDash([3, 3]);
    ctx.beginPath();
    ctx.moveTo(Math.round(px) + 0.5, g.top);
    ctx.lineTo(Math.round(px) + 0.5, g.bottom);
    ctx.stroke();
    ctx.setLineDash([]);
    for (const { s, p } of rows) {
      ctx.beginPath();
      ctx.fillStyle = "#fff";
      ctx.strokeStyle = s.color;
      ctx.lineWidth = 2;
      ctx.arc(g.sx(p[0]), g.sy(p[1]), 4, 0, Math.PI * 2);
      ctx.fill();
      ctx.stroke();
    }
    render(this.tooltip, html`<div class="t">${formatDateTime(best)}</div>${rows.map(
      ({ s, p }) => html`<div class="r"><i style="background:${s.color}"></i>${s.name}<b>${this.formatValue(p[1])}</b></div>`,
    )}`);
    this.tooltip.hidden = false;
    const tw = this.tooltip.offsetWidth;
    const x = px + 14 + tw > this.plot.clientWidth ? px - 14 - tw : px + 14;
    this.tooltip.style.left = `${Math.max(0, x)}px`;
    this.tooltip.style.top = `${g.top + 4}px`;
  }

  destroy() {
    this.resizeObserver.disconnect();
  }
}
