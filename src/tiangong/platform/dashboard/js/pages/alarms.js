// Alarms: open alarms by default (or all), by severity, site or device; acknowledge and clear.

import { ApiError, api } from "../api.js";
import { siteMap, siteName } from "../catalog.js";
import {
  SEVERITIES,
  alarmStateBadge,
  ago,
  describeError,
  emptyState,
  errorState,
  loadingState,
  severityBadge,
  toast,
} from "../components.js";
import { formatInt, formatNumber, titleCase } from "../format.js";
import { html, render } from "../html.js";
import { updateQuery } from "../router.js";

const PAGE_SIZE = 50;

export async function mount(outlet, { query }, scope) {
  const filters = {
    open: query.get("all") !== "1",
    severity: SEVERITIES.includes(query.get("severity")) ? query.get("severity") : "",
    site: query.get("site") ?? "",
    device: query.get("device") ?? "",
    page: Math.max(1, Number.parseInt(query.get("page") ?? "1", 10) || 1),
  };
  render(outlet, html`<div class="page-head"><div><h1>Alarms</h1>
      <div class="sub">Raised by threshold and rate-of-change rules on live telemetry</div></div>
      <div class="sev-pills" data-summary></div></div>
    <section class="card">
      <div class="toolbar">
        <div class="segmented" role="group" aria-label="Which alarms" data-scope>
          <button type="button" data-open="1" aria-pressed="${String(filters.open)}">Open</button>
          <button type="button" data-open="0" aria-pressed="${String(!filters.open)}">All</button>
        </div>
        <label class="field">Severity <select data-severity><option value="">All severities</option>${SEVERITIES.map(
          (s) => html`<option value="${s}" ${s === filters.severity ? "selected" : ""}>${titleCase(s)}</option>`,
        )}</select></label>
        <label class="field">Site <select data-site><option value="">All sites</option></select></label>
        ${filters.device ? html`<span class="chip" data-device-filter>Device <b>${filters.device}</b>
          <a href="#/alarms" title="Show alarms of every device" aria-label="Remove device filter">✕</a></span>` : ""}
        <span class="spacer"></span>
      </div>
      <div class="table-wrap" data-table>${loadingState("Loading alarms…")}</div>
      <div class="card-foot"><span data-range>&nbsp;</span>
        <div class="pager"><button class="btn small" type="button" data-prev>← Previous</button>
        <span class="num" data-page></span><button class="btn small" type="button" data-next>Next →</button></div></div>
    </section>`);

  const table = outlet.querySelector("[data-table]");
  const siteSelect = outlet.querySelector("[data-site]");
  let generation = 0;
  let first = true;

  const persist = () => updateQuery({
    all: filters.open ? "" : "1",
    severity: filters.severity,
    site: filters.site,
    device: filters.device,
    page: filters.page > 1 ? filters.page : "",
  });

  const poller = scope.poll(
    async (signal) => {
      const mine = generation;
      const [alarms, sites, overview] = await Promise.all([
        api.alarms({
          open: filters.open ? "true" : "",
          severity: filters.severity,
          site: filters.site,
          device: filters.device,
          limit: PAGE_SIZE,
          offset: (filters.page - 1) * PAGE_SIZE,
        }, { signal }),
        siteMap(),
        api.overview({ signal }),
      ]);
      if (!scope.active || mine !== generation) return;
      first = false;
      if (siteSelect.options.length !== sites.size + 1) {
        render(siteSelect, html`<option value="">All sites</option>${[...sites.values()].map(
          (s) => html`<option value="${s.id}" ${s.id === filters.site ? "selected" : ""}>${s.name}</option>`,
        )}`);
      }
      renderSummary(outlet.querySelector("[data-summary]"), overview.alarms_open || {});
      renderTable(alarms, sites);
    },
    5000,
    { onError: (error) => first && render(table, errorState(error, "Could not load the alarms")) },
  );

  const changed = () => {
    generation += 1;
    persist();
    render(table, loadingState("Loading alarms…"));
    poller.now();
  };

  function renderTable(alarms, sites) {
    if (!alarms.items.length) {
      render(table, filters.open && !filters.severity && !filters.site && !filters.device
        ? emptyState("No open alarms", "Every rule is quiet. Switch to All to see the history.")
        : emptyState("No alarms match", "Try another filter."));
    } else {
      render(table, html`<table class="data" data-alarm-table>
        <thead><tr><th>Severity</th><th>State</th><th>Alarm</th><th>Device</th><th>Site</th>
          <th class="right">Value</th><th class="right">Count</th><th>Raised</th><th>Updated</th><th class="right">Actions</th></tr></thead>
        <tbody>${alarms.items.map((a) => html`<tr data-alarm="${a.id}">
          <td>${severityBadge(a.severity)}</td>
          <td>${alarmStateBadge(a.state)}${a.acknowledged_by ? html`<div class="faint" style="font-size:var(--fs-xs)">by ${a.acknowledged_by}</div>` : ""}</td>
          <td style="max-width:360px"><div class="dev-name">${a.rule_name}</div><div class="muted" style="font-size:var(--fs-sm)">${a.message}</div></td>
          <td class="nowrap"><a href="#/devices/${encodeURIComponent(a.device_id)}">${a.device_id}</a></td>
          <td class="nowrap" title="${siteName(sites, a.site_id)}">${siteName(sites, a.site_id).split(" / ")[0]}</td>
          <td class="right num nowrap">${a.value === null ? "—" : formatNumber(a.value)}</td>
          <td class="right num">${formatInt(a.count)}</td>
          <td class="nowrap">${ago(a.raised_at)}</td>
          <td class="nowrap">${a.state === "cleared" ? ago(a.cleared_at) : ago(a.updated_at)}</td>
          <td class="right nowrap">${a.state === "cleared" ? html`<span class="faint">—</span>` : html`
            ${a.state === "active" ? html`<button class="btn small" type="button" data-action="acknowledge" data-id="${a.id}">Acknowledge</button>` : ""}
            <button class="btn small danger" type="button" data-action="clear" data-id="${a.id}">Clear</button>`}</td>
        </tr>`)}</tbody></table>`);
    }
    const from = alarms.total ? (filters.page - 1) * PAGE_SIZE + 1 : 0;
    const to = Math.min(alarms.total, (filters.page - 1) * PAGE_SIZE + alarms.items.length);
    outlet.querySelector("[data-range]").textContent = alarms.total
      ? `Showing ${formatInt(from)}–${formatInt(to)} of ${formatInt(alarms.total)} ${filters.open ? "open " : ""}alarms`
      : "";
    const pages = Math.max(1, Math.ceil(alarms.total / PAGE_SIZE));
    outlet.querySelector("[data-page]").textContent = `Page ${filters.page} of ${pages}`;
    outlet.querySelector("[data-prev]").disabled = filters.page <= 1;
    outlet.querySelector("[data-next]").disabled = filters.page >= pages;
  }

  outlet.querySelector("[data-scope]").addEventListener("click", (e) => {
    const button = e.target.closest("button[data-open]");
    if (!button) return;
    filters.open = button.dataset.open === "1";
    filters.page = 1;
    for (const b of outlet.querySelectorAll("[data-open]")) b.setAttribute("aria-pressed", String(b === button));
    changed();
  });
  outlet.querySelector("[data-severity]").addEventListener("change", (e) => {
    filters.severity = e.target.value;
    filters.page = 1;
    changed();
  });
  siteSelect.addEventListener("change", () => {
    filters.site = siteSelect.value;
    filters.page = 1;
    changed();
  });
  outlet.querySelector("[data-prev]").addEventListener("click", () => {
    filters.page = Math.max(1, filters.page - 1);
    changed();
  });
  outlet.querySelector("[data-next]").addEventListener("click", () => {
    filters.page += 1;
    changed();
  });
  outlet.querySelector("[data-summary]").addEventListener("click", (e) => {
    const pill = e.target.closest("[data-severity-pill]");
    if (!pill) return;
    e.preventDefault();
    filters.severity = filters.severity === pill.dataset.severityPill ? "" : pill.dataset.severityPill;
    filters.open = true;
    filters.page = 1;
    outlet.querySelector("[data-severity]").value = filters.severity;
    for (const b of outlet.querySelectorAll("[data-open]")) b.setAttribute("aria-pressed", String(b.dataset.open === "1"));
    changed();
  });

  table.addEventListener("click", async (e) => {
    const button = e.target.closest("button[data-action]");
    if (!button) return;
    const { action, id } = button.dataset;
    for (const b of button.parentElement.querySelectorAll("button")) b.disabled = true;
    try {
      const alarm = action === "acknowledge" ? await api.acknowledgeAlarm(id) : await api.clearAlarm(id);
      toast(action === "acknowledge" ? "Alarm acknowledged" : "Alarm cleared", `${alarm.rule_name} on ${alarm.device_id}`);
    } catch (error) {
      const verb = action === "acknowledge" ? "acknowledge" : "clear";
      const title = error instanceof ApiError && error.status === 403 ? `You may not ${verb} alarms` : `Could not ${verb} the alarm`;
      toast(title, describeError(error), "error");
    }
    generation += 1;
    poller.now();
  });
}

function renderSummary(host, counts) {
  render(host, html`${SEVERITIES.map((s) => {
    const n = counts[s] || 0;
    return html`<a href="#/alarms?severity=${s}" class="sev-pill sev-${s}${n ? "" : " zero"}" data-severity-pill="${s}"
      title="Show open ${s} alarms"><i></i>${formatInt(n)} ${s}</a>`;
  })}`);
}
