// Small pieces of markup shared by the pages: badges, empty/loading/error states, toasts and
// relative times. Each returns html`` markup (escaped) or works on the DOM directly.

import { ApiError } from "./api.js";
import { formatAgo, formatDateTime, formatPercent, titleCase } from "./format.js";
import { fragment, html } from "./html.js";

export const SEVERITIES = ["critical", "major", "minor", "warning", "info"];
export const DEVICE_STATES = ["online", "offline", "provisioned", "decommissioned"];

export function stateBadge(state) {
  return html`<span class="badge state-${state}" data-state="${state}">${titleCase(state)}</span>`;
}

export function severityBadge(severity) {
  return html`<span class="badge sev-${severity}">${titleCase(severity)}</span>`;
}

export function alarmStateBadge(state) {
  return html`<span class="badge plain alarm-${state}">${titleCase(state)}</span>`;
}

/**
 * Open alarms per severity as pills ("2 critical"); `link` makes each one open the alarm list
 * filtered to that severity. Severities without alarms are left out unless `all`.
 */
export function severityPills(counts, { link = false, all = false } = {}) {
  const shown = SEVERITIES.filter((s) => all || counts[s]);
  if (!shown.length) return html`<div class="sev-pills"><span class="muted">No open alarms</span></div>`;
  const pills = shown.map((s) => {
    const n = counts[s] || 0;
    const cls = `sev-pill sev-${s}${n ? "" : " zero"}`;
    const title = `${n} open ${s} alarm${n === 1 ? "" : "s"}`;
    const body = html`<i></i>${n} ${s}`;
    return link
      ? html`<a class="${cls}" href="#/alarms?severity=${s}" title="${title}">${body}</a>`
      : html`<span class="${cls}" title="${title}">${body}</span>`;
  });
  return html`<div class="sev-pills">${pills}</div>`;
}

/** A time that reads "3 s ago" and keeps itself current (see startClock). */
export function ago(ts) {
  if (!ts) return html`<span class="faint">never</span>`;
  return html`<time data-ago datetime="${ts}" title="${formatDateTime(ts)}">${formatAgo(ts)}</time>`;
}

/** Update every relative time on the page once a second. */
export function startClock() {
  setInterval(() => {
    const now = Date.now();
    for (const el of document.querySelectorAll("time[data-ago]")) {
      el.textContent = formatAgo(el.getAttribute("datetime"), now);
    }
  }, 1000);
}

/** A bar showing a ratio; colour by how healthy the value is. */
export function meter(ratio, { good = 0.95, fair = 0.8, tone } = {}) {
  const pct = ratio === null || ratio === undefined ? 0 : Math.max(0, Math.min(1, ratio)) * 100;
  const cls = tone ?? (ratio === null || ratio === undefined ? "" : ratio >= good ? "" : ratio >= fair ? "warn" : "bad");
  return html`<div class="meter ${cls}" role="meter" aria-valuenow="${pct.toFixed(1)}" aria-valuemin="0"
    aria-valuemax="100" title="${formatPercent(ratio)}"><span style="width:${pct.toFixed(2)}%"></span></div>`;
}

export function loadingState(text = "Loading…") {
  return html`<div class="state-box" data-loading><div class="spinner"></div><div>${text}</div></div>`;
}

export function emptyState(title, hint = "") {
  return html`<div class="state-box" data-empty><div class="title">${title}</div>${
    hint ? html`<div class="hint">${hint}</div>` : ""
  }</div>`;
}

export function errorState(error, what = "Could not load this") {
  return html`<div class="state-box error"><div class="title">${what}</div>
    <div class="hint">${describeError(error)}</div></div>`;
}

/** An error in words a plant manager can act on. */
export function describeError(error) {
  if (error instanceof ApiError) {
    if (error.status === 0) return "The platform cannot be reached. Is it running?";
    if (error.status === 403) return `Not allowed: ${error.detail}`;
    if (error.status === 404) return `Not found: ${error.detail}`;
    return error.detail;
  }
  return String(error?.message ?? error);
}

/** A short notice in the corner: kind "ok" or "error". */
export function toast(title, detail = "", kind = "ok") {
  const host = document.getElementById("toasts");
  const el = fragment(html`<div class="toast ${kind}" role="${kind === "error" ? "alert" : "status"}">
    <div class="title">${title}</div>${detail ? html`<div class="detail">${detail}</div>` : ""}</div>`);
  host.append(el);
  setTimeout(() => el.remove(), kind === "error" ? 7000 : 4000);
}
