// How numbers, units and times read on screen. One place so that a percentage always has one
// decimal, large numbers always have thousands separators, and "degC" always reads "°C".

const LOCALE = "en-US";
const intFormat = new Intl.NumberFormat(LOCALE, { maximumFractionDigits: 0 });
const decimalFormats = new Map();

function decimals(n) {
  if (!decimalFormats.has(n)) {
    decimalFormats.set(n, new Intl.NumberFormat(LOCALE, { minimumFractionDigits: n, maximumFractionDigits: n }));
  }
  return decimalFormats.get(n);
}

/** Thousands separators, no decimals: 1,234,567. */
export function formatInt(value) {
  return value === null || value === undefined || Number.isNaN(value) ? "—" : intFormat.format(value);
}

/**
 * A measured value with as many decimals as its size deserves: 12,034 / 512.3 / 26.4 / 0.95.
 * `fixed` forces a number of decimals (axis labels use one precision for the whole axis).
 */
export function formatNumber(value, fixed) {
  if (value === null || value === undefined || Number.isNaN(value)) return "—";
  if (typeof value !== "number") return String(value);
  if (fixed !== undefined) return decimals(fixed).format(value);
  const abs = Math.abs(value);
  if (Number.isInteger(value)) return intFormat.format(value);
  if (abs >= 1000) return intFormat.format(value);
  if (abs >= 10) return decimals(1).format(value);
  if (abs >= 0.1 || abs === 0) return decimals(2).format(value);
  return decimals(3).format(value);
}

/**
 * A value of a thing-model property: integers for "int" properties; for "float" ones the same
 * precision whether or not the reading happens to be whole (292.0 kW next to 307.4 kW).
 */
export function formatMeasurement(value, type) {
  if (typeof value !== "number") return formatNumber(value);
  if (type === "int") return formatInt(value);
  if (type !== "float" || value === 0) return formatNumber(value);
  const abs = Math.abs(value);
  return formatNumber(value, abs >= 1000 ? 0 : abs >= 10 ? 1 : abs >= 0.1 ? 2 : 3);
}

/** A ratio 0..1 as a percentage with one decimal: 0.9736 -> "97.4%". */
export function formatPercent(ratio, digits = 1) {
  if (ratio === null || ratio === undefined || Number.isNaN(ratio)) return "—";
  return `${decimals(digits).format(ratio * 100)}%`;
}

const UNITS = {
  degC: "°C",
  degF: "°F",
  "m3/h": "m³/h",
  m3: "m³",
  "m/s2": "m/s²",
  percent: "%",
};

/** A thing-model unit as people write it. */
export function formatUnit(unit) {
  if (!unit) return "";
  return UNITS[unit] ?? unit;
}

/**
 * A latest value for display: { text, unit, kind } where kind is "number", "enum" (a label),
 * "bool" or "text". The API already turns enum indexes into labels; `type` is the property's
 * thing-model type when known.
 */
export function displayValue(value, unit, type = null) {
  if (value === null || value === undefined) return { text: "—", unit: "", kind: "text" };
  if (typeof value === "boolean") return { text: value ? "On" : "Off", unit: "", kind: "bool" };
  if (typeof value === "number") return { text: formatMeasurement(value, type), unit: formatUnit(unit), kind: "number" };
  return { text: String(value), unit: "", kind: "enum" };
}

/** A rate per second: 1,234/s, 45.2/s. */
export function formatRate(perSecond) {
  if (perSecond === null || perSecond === undefined) return "—";
  return perSecond >= 100 ? formatInt(perSecond) : formatNumber(perSecond, 1);
}

const pad = (n) => String(n).padStart(2, "0");

function toDate(ts) {
  if (ts === null || ts === undefined) return null;
  const d = ts instanceof Date ? ts : new Date(ts);
  return Number.isNaN(d.getTime()) ? null : d;
}

/** "08:26:03" in the browser's time zone. */
export function formatClock(ts, seconds = true) {
  const d = toDate(ts);
  if (!d) return "—";
  const hm = `${pad(d.getHours())}:${pad(d.getMinutes())}`;
  return seconds ? `${hm}:${pad(d.getSeconds())}` : hm;
}

/** "2026-11-22 08:26:03" in the browser's time zone. */
export function formatDateTime(ts) {
  const d = toDate(ts);
  if (!d) return "—";
  return `${d.getFullYear()}-${pad(d.getMonth() + 1)}-${pad(d.getDate())} ${formatClock(d)}`;
}

/** "11-22" (month-day) for axis labels at day boundaries. */
export function formatMonthDay(ts) {
  const d = toDate(ts);
  return d ? `${pad(d.getMonth() + 1)}-${pad(d.getDate())}` : "—";
}

/** "3 s ago", "5 min ago", "2 h ago", "4 d ago"; "never" without a time. */
export function formatAgo(ts, now = Date.now()) {
  const d = toDate(ts);
  if (!d) return "never";
  const s = Math.round((now - d.getTime()) / 1000);
  if (s < 0) return "just now";
  if (s < 60) return `${s} s ago`;
  const m = Math.floor(s / 60);
  if (m < 60) return `${m} min ago`;
  const h = Math.floor(m / 60);
  if (h < 48) return `${h} h ago`;
  return `${Math.floor(h / 24)} d ago`;
}

/** A duration in words: "4 min", "2 h 5 min". */
export function formatDuration(ms) {
  const s = Math.max(0, Math.round(ms / 1000));
  if (s < 60) return `${s} s`;
  const m = Math.floor(s / 60);
  if (m < 60) return `${m} min`;
  const h = Math.floor(m / 60);
  if (h < 48) return m % 60 ? `${h} h ${m % 60} min` : `${h} h`;
  return `${Math.floor(h / 24)} d`;
}

/** Capitalised first letter: "online" -> "Online". */
export function titleCase(text) {
  return text ? text.charAt(0).toUpperCase() + text.slice(1) : "";
}
