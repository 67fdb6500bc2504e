// Equipment health page (设备健康): the fleet's health index and remaining useful life, with the
// model version that made each estimate; recent sensor anomalies (spike, stuck, drift); and the
// maintenance work orders with their lifecycle buttons. Figures come from /api/v1/apps/health,
// /api/v1/apps/work-orders and /api/v1/apps/models. An estimate the platform cannot make yet
// (a baseline still being learnt, no falling trend) shows "—" with the reason, never a number.

import { ApiError, healthApi } from "../api.js";
import { ago, describeError, emptyState, errorState, loadingState, meter, toast } from "../components.js";
import { formatInt, formatNumber, titleCase } from "../format.js";
import { html, render } from "../html.js";

/** The buttons each work order state offers (the lifecycle of apps/health/workorders.py). */
const ACTIONS = {
  open: ["acknowledge", "schedule", "cancel"],
  acknowledged: ["schedule", "start", "cancel"],
  scheduled: ["start", "cancel"],
  in_progress: ["complete", "cancel"],
  done: [],
  cancelled: [],
};
const ORDER_TONE = { open: "sev-major", acknowledged: "sev-minor", scheduled: "sev-info", in_progress: "sev-warning" };

function healthCell(e) {
  if (e.health_index === null || e.health_index === undefined) {
    const learning = Object.entries(e.detail?.learning ?? {}).map(([k, n]) => `${k}: ${n} values`).join(", ");
    return html`<span class="faint" title="${learning}">learning baseline</span>`;
  }
  return html`<div style="display:flex;align-items:center;gap:10px"><div style="width:96px">${meter(e.health_index, { good: 0.7, fair: 0.3 })}</div>
    <span class="num">${formatNumber(e.health_index, 2)}</span></div>`;
}

function rulCell(e) {
  if (e.rul === null || e.rul === undefined) return html`<span class="faint" title="${e.rul_reason ?? ""}">— ${e.rul_reason ?? ""}</span>`;
  const capped = e.method === "rul-model" && e.detail?.rul_cap && e.rul >= e.detail.rul_cap;
  const unit = Math.round(e.rul) === 1 && e.rul_unit === "cycles" ? "cycle" : e.rul_unit;
  return html`<span class="num">${formatNumber(e.rul, e.rul_unit === "hours" ? 1 : 0)}</span> ${unit}${
    capped ? html` <span class="faint" title="The model says no wear is visible yet">(no wear yet)</span>` : ""}`;
}

function driverCell(e) {
  if (e.method === "rul-model") return html`<span class="muted">${formatInt(e.detail?.cycles_seen ?? 0)} cycles, last ${e.detail?.last_cycle ?? "—"}</span>`;
  if (!e.driver) return html`<span class="faint">—</span>`;
  const level = e.detail?.levels?.[e.driver];
  const ratio = level && level.baseline ? level.level / level.baseline : null;
  return html`<span title="${level ? `baseline ${formatNumber(level.baseline)} → now ${formatNumber(level.level)}` : ""}">${e.driver}${
    ratio ? html` <span class="muted">×${formatNumber(ratio, 2)}</span>` : ""}</span>`;
}

export async function mount(outlet, _params, scope) {
  render(outlet, html`<div class="page-head"><div><h1>Equipment health <span class="muted">设备健康</span></h1>
      <div class="sub">Health index and remaining useful life per machine, sensor anomalies and maintenance work orders</div></div></div>
    <section class="card" data-fleet-card><div class="card-head"><h2>Fleet health</h2>
      <span class="muted" data-models></span></div>
      <div class="table-wrap" data-fleet>${loadingState("Loading health estimates…")}</div></section>
    <section class="card"><div class="card-head"><h2>Work orders</h2>
        <div class="segmented" role="group" aria-label="Which work orders" data-which>
          <button type="button" data-active="1" aria-pressed="true">Active</button>
          <button type="button" data-active="0" aria-pressed="false">All</button></div></div>
        <div class="table-wrap" data-orders>${loadingState("Loading work orders…")}</div></section>
    <section class="card"><div class="card-head"><h2>Sensor anomalies</h2><span class="muted" data-anomaly-count></span></div>
        <div class="table-wrap" data-anomalies>${loadingState("Loading anomalies…")}</div></section>`);

  const fleetHost = outlet.querySelector("[data-fleet]");
  const ordersHost = outlet.querySelector("[data-orders]");
  const anomaliesHost = outlet.querySelector("[data-anomalies]");
  let activeOnly = true;
  let first = true;

  const poller = scope.poll(
    async (signal) => {
      const [fleet, orders, anomalies, models] = await Promise.all([
        healthApi.fleet({ signal }),
        healthApi.workOrders({ active: activeOnly ? "true" : "", limit: 50 }, { signal }),
        healthApi.anomalies({ limit: 30 }, { signal }),
        healthApi.models({ signal }),
      ]);
      if (!scope.active) return;
      first = false;
      renderFleet(fleet);
      renderOrders(orders);
      renderAnomalies(anomalies);
      const shipped = models.find((m) => m.bundled);
      outlet.querySelector("[data-models]").textContent =
        `${formatInt(models.length)} RUL model version${models.length === 1 ? "" : "s"}${shipped ? ` · shipped ${shipped.version}` : ""}`;
    },
    5000,
    { onError: (error) => first && render(fleetHost, errorState(error, "Could not load equipment health")) },
  );

  function renderFleet(fleet) {
    if (!fleet.length) {
      render(fleetHost, emptyState("No machine is judged yet",
        "Health appears for devices whose thing model has a health profile (turbofan, cnc, pump, compressor) once they report."));
      return;
    }
    render(fleetHost, html`<table class="data" data-health-table>
      <thead><tr><th>Device</th><th>Method</th><th>Health index</th><th>Remaining useful life</th>
        <th>Driver</th><th>Model version</th><th>Updated</th></tr></thead>
      <tbody>${fleet.map((e) => html`<tr data-health-device="${e.device_id}">
        <td class="nowrap"><a href="#/devices/${encodeURIComponent(e.device_id)}">${e.device_id}</a>
          <div class="faint" style="font-size:var(--fs-xs)">${e.model_id} · ${e.site_id}</div></td>
        <td class="nowrap">${e.method === "rul-model" ? "RUL model" : "Own baseline + trend"}</td>
        <td style="min-width:160px">${healthCell(e)}</td>
        <td>${rulCell(e)}</td>
        <td>${driverCell(e)}</td>
        <td class="mono nowrap" data-model-version>${e.model_version}</td>
        <td class="nowrap">${ago(e.updated_at)}</td>
      </tr>`)}</tbody></table>`);
  }

  function renderOrders(orders) {
    if (!orders.items.length) {
      render(ordersHost, emptyState(activeOnly ? "No active work orders" : "No work orders",
        "Orders open when a machine's health or RUL stays below its policy's threshold."));
      return;
    }
    render(ordersHost, html`<table class="data" data-order-table>
      <thead><tr><th>#</th><th>Device</th><th>State</th><th>Why</th><th class="right">Actions</th></tr></thead>
      <tbody>${orders.items.map((o) => {
        const last = o.steps[o.steps.length - 1];
        return html`<tr data-order="${o.id}">
          <td class="num">${o.id}</td>
          <td class="nowrap"><a href="#/devices/${encodeURIComponent(o.device_id)}">${o.device_id}</a>
            <div class="faint" style="font-size:var(--fs-xs)">${o.cause.replace("_", " ")}</div></td>
          <td class="nowrap"><span class="badge ${ORDER_TONE[o.state] ?? "plain"}" data-order-state>${titleCase(o.state.replace("_", " "))}</span>
            <div class="faint" style="font-size:var(--fs-xs)">${last.by} · ${ago(last.at)}</div>
            ${o.repair_reported_at ? html`<div class="muted" style="font-size:var(--fs-xs)" title="The device reported a repair; close the order if it was this work">repair reported ${ago(o.repair_reported_at)}</div>` : ""}</td>
          <td style="max-width:320px;font-size:var(--fs-sm)">${o.recommendation || o.title}${
            o.model_version ? html`<div class="faint mono" style="font-size:var(--fs-xs)">${o.model_version}</div>` : ""}</td>
          <td class="right nowrap">${(ACTIONS[o.state] ?? []).map((a) => html`<button class="btn small${a === "cancel" ? " danger" : ""}"
            type="button" data-action="${a}" data-id="${o.id}">${titleCase(a)}</button> `)}</td>
        </tr>`;
      })}</tbody></table>`);
  }

  function renderAnomalies(page) {
    outlet.querySelector("[data-anomaly-count]").textContent = page.total ? `${formatInt(page.total)} in total` : "";
    if (!page.items.length) {
      render(anomaliesHost, emptyState("No sensor anomalies", "Spikes, stuck sensors and drift show here as they are found."));
      return;
    }
    render(anomaliesHost, html`<table class="data" data-anomaly-table>
      <thead><tr><th>Kind</th><th>Device</th><th>Metric</th><th class="right">Value</th><th class="right">Score</th><th>When</th></tr></thead>
      <tbody>${page.items.map((a) => html`<tr data-anomaly="${a.id}">
        <td><span class="badge plain ${a.kind === "spike" ? "sev-major" : a.kind === "stuck" ? "sev-minor" : "sev-info"}">${titleCase(a.kind)}</span>${
          a.kind === "drift" ? html` <span class="muted">${a.detail.direction}</span>` : ""}</td>
        <td class="nowrap"><a href="#/devices/${encodeURIComponent(a.device_id)}">${a.device_id}</a></td>
        <td class="mono">${a.metric}</td>
        <td class="right num">${formatNumber(a.value)}</td>
        <td class="right num">${formatNumber(a.score, 1)}</td>
        <td class="nowrap">${ago(a.ts)}</td>
      </tr>`)}</tbody></table>`);
  }

  outlet.querySelector("[data-which]").addEventListener("click", (e) => {
    const button = e.target.closest("button[data-active]");
    if (!button) return;
    activeOnly = button.dataset.active === "1";
    for (const b of outlet.querySelectorAll("[data-active]")) b.setAttribute("aria-pressed", String(b === button));
    render(ordersHost, loadingState("Loading work orders…"));
    poller.now();
  });

  ordersHost.addEventListener("click", async (e) => {
    const button = e.target.closest("button[data-action]");
    if (!button) return;
    const { action, id } = button.dataset;
    for (const b of button.parentElement.querySelectorAll("button")) b.disabled = true;
    try {
      const order = await healthApi.transition(id, action);
      toast(`Work order ${order.id}: ${order.state.replace("_", " ")}`, `${order.device_id} · ${order.title}`);
    } catch (error) {
      const title = error instanceof ApiError && error.status === 403 ? "You may not change work orders" : `Could not ${action} the work order`;
      toast(title, describeError(error), "error");
    }
    poller.now();
  });
}
