// Security: what the security monitor raised (tiangong.security.monitor): the posture of the
// last 24 hours by severity and by kind, the events themselves (filtered, with their evidence,
// acknowledged by a tenant administrator) and the maintenance windows in which firmware and
// configuration changes are expected.
//
// Reading needs access:admin (a tenant administrator) or audit:read (an auditor); acting needs
// access:admin. Everyone else is refused by the API, and the page says who may see it instead
// of showing an error.

import { ApiError, api, securityApi } from "../api.js";
import { ago, describeError, emptyState, errorState, loadingState, toast } from "../components.js";
import { formatDateTime, formatDuration, formatInt, titleCase } from "../format.js";
import { html, render } from "../html.js";
import { updateQuery } from "../router.js";

const PAGE_SIZE = 50;
const SEVERITIES = ["critical", "high", "medium", "low"];
const KINDS = {
  login_brute_force: "Sign-in brute force",
  device_credential_failures: "Device password guessing",
  topic_violation: "Topic violation",
  certificate_revoked: "Revoked certificate",
  certificate_unknown: "Unknown certificate",
  certificate_foreign: "Foreign certificate",
  certificate_expired: "Expired certificate",
  decommissioned_traffic: "Decommissioned device",
  rate_anomaly: "Rate anomaly",
  firmware_change: "Firmware change",
  config_change: "Configuration change",
};
// The API's maximum window is 14 days (MaintenanceIn.hours).
const MAX_WINDOW_HOURS = 24 * 14;

const kindName = (kind) => KINDS[kind] ?? titleCase(kind.replaceAll("_", " "));

function severityBadge(severity) {
  return html`<span class="badge secsev-${severity}" data-severity="${severity}">${titleCase(severity)}</span>`;
}

/** The event's kind; brute force from one address over many names reads as spraying. */
function kindCell(event) {
  const spraying = event.kind === "login_brute_force" && event.subject.startsWith("source:");
  return html`<div class="sec-kind">${spraying ? "Password spraying" : kindName(event.kind)}</div>
    <div class="sec-code">${event.kind}</div>`;
}

/** Who or what the event is about: the device (linked), the user, the source address. */
function subjectCell(event) {
  const lines = [];
  if (event.device_id) {
    lines.push(html`<a class="dev-name" href="#/devices/${encodeURIComponent(event.device_id)}">${event.device_id}</a>`);
  }
  if (event.username && event.username !== event.device_id) {
    // Device password guessing names the MQTT user name tried, which need not be a device.
    const what = event.kind === "device_credential_failures" ? "MQTT user" : "user";
    lines.push(html`<span class="${lines.length ? "sec-sub" : "dev-name"}">${what} <b>${event.username}</b></span>`);
  }
  if (event.source) lines.push(html`<span class="${lines.length ? "sec-sub" : "dev-name"} mono">${lines.length ? "from " : ""}${event.source}</span>`);
  if (event.site_id) lines.push(html`<span class="sec-sub">site ${event.site_id}</span>`);
  if (!lines.length) lines.push(html`<span class="dev-name">${event.subject}</span>`);
  return html`<div class="sec-subject" title="${event.subject}">${lines}</div>`;
}

function evidenceValue(value) {
  if (value === null || value === undefined) return "—";
  if (Array.isArray(value)) return value.length ? value.map((v) => (typeof v === "object" ? JSON.stringify(v) : String(v))).join(", ") : "none";
  if (typeof value === "object") return JSON.stringify(value);
  if (typeof value === "boolean") return value ? "yes" : "no";
  return String(value);
}

function evidenceList(evidence) {
  const entries = Object.entries(evidence ?? {});
  if (!entries.length) return html`<span class="faint">No evidence recorded.</span>`;
  return html`<dl class="sec-evidence">${entries.map(([key, value]) => html`<div>
    <dt>${key.replace(/_s$/, " (s)").replaceAll("_", " ")}</dt><dd>${evidenceValue(value)}</dd></div>`)}</dl>`;
}

/** "until 18:30 (in 4 h)" for a window end. */
function untilText(ts) {
  const left = new Date(ts).getTime() - Date.now();
  return `${formatDateTime(ts)} (${left > 0 ? `in ${formatDuration(left)}` : "ending"})`;
}

/** The value of a datetime-local input for a moment, in the browser's time zone. */
function localInputValue(date) {
  const pad = (n) => String(n).padStart(2, "0");
  return `${date.getFullYear()}-${pad(date.getMonth() + 1)}-${pad(date.getDate())}T${pad(date.getHours())}:${pad(date.getMinutes())}`;
}

export async function mount(outlet, { query }, scope) {
  const filters = {
    open: query.get("all") !== "1",
    severity: SEVERITIES.includes(query.get("severity")) ? query.get("severity") : "",
    kind: KINDS[query.get("kind")] ? query.get("kind") : "",
    page: Math.max(1, Number.parseInt(query.get("page") ?? "1", 10) || 1),
  };
  render(outlet, html`<div class="page-head"><div><h1>Security</h1>
      <div class="sub">Raised by the security monitor: sign-ins, broker refusals, certificates, device rates,
        firmware and configuration changes</div></div>
      <div class="sec-window-note muted" data-window-note hidden>Tiles and kinds: events active in the last 24 hours</div></div>
    <div class="sec-body" data-security-body>${loadingState("Loading security events…")}</div>`);
  const body = outlet.querySelector("[data-security-body]");

  let me;
  try {
    me = await api.me({ signal: scope.signal });
  } catch (error) {
    if (error.name === "AbortError" || !scope.active) return;
    render(body, html`<section class="card">${errorState(error, "Could not load the security page")}</section>`);
    return;
  }
  if (!scope.active) return;
  const canRead = me.scopes.includes("access:admin") || me.scopes.includes("audit:read");
  const canAct = me.scopes.includes("access:admin");
  if (!canRead) {
    renderRefused(body, me.role);
    return;
  }
  outlet.querySelector("[data-window-note]").hidden = false;

  render(body, html`
    <section class="grid kpis sec-tiles" data-posture>${loadingState()}</section>
    <div class="sec-dropped" data-dropped role="status" hidden></div>
    <section class="grid sec-split">
      <div class="card"><div class="card-head"><h2>By kind</h2><span class="sub">last 24 h · click one to filter the events</span></div>
        <div class="card-body" data-kinds>${loadingState()}</div></div>
      <div class="card" data-maintenance-card><div class="card-head"><h2>Maintenance windows</h2>
        <span class="sub">firmware and configuration changes inside one raise no event</span></div>
        <div data-maintenance>${loadingState()}</div>
        ${canAct ? maintenanceForm() : html`<div class="card-foot"><span>Only a tenant administrator opens maintenance windows.</span></div>`}
      </div>
    </section>
    <section class="card">
      <div class="card-head"><h2>Events</h2><span class="sub">latest activity first · repeats within 10 min update one event</span></div>
      <div class="toolbar">
        <div class="segmented" role="group" aria-label="Which events" data-scope>
          <button type="button" data-open="1" aria-pressed="${String(filters.open)}">Open</button>
          <button type="button" data-open="0" aria-pressed="${String(!filters.open)}">All</button>
        </div>
        <label class="field">Severity <select data-severity><option value="">All severities</option>${SEVERITIES.map(
          (s) => html`<option value="${s}" ${s === filters.severity ? "selected" : ""}>${titleCase(s)}</option>`,
        )}</select></label>
        <label class="field">Kind <select data-kind><option value="">All kinds</option>${Object.entries(KINDS).map(
          ([k, name]) => html`<option value="${k}" ${k === filters.kind ? "selected" : ""}>${name}</option>`,
        )}</select></label>
        <span class="spacer"></span>
        ${canAct ? "" : html`<span class="faint sec-readonly" data-read-only>Read only: acknowledging needs a tenant administrator</span>`}
      </div>
      <div class="table-wrap" data-table>${loadingState("Loading security events…")}</div>
      <div class="card-foot"><span data-range>&nbsp;</span>
        <div class="pager"><button class="btn small" type="button" data-prev>← Previous</button>
        <span class="num" data-page></span><button class="btn small" type="button" data-next>Next →</button></div></div>
    </section>`);

  const $ = (sel) => outlet.querySelector(sel);
  const table = $("[data-table]");
  const expanded = new Set(); // events whose evidence is shown, kept across refreshes
  let generation = 0;
  let first = true;
  let shown = { events: "", posture: "", windows: "" }; // what is on screen, to skip needless redraws
  let refused = false; // the role was taken away meanwhile: the page shows who may see it

  const persist = () => updateQuery({
    all: filters.open ? "" : "1",
    severity: filters.severity,
    kind: filters.kind,
    page: filters.page > 1 ? filters.page : "",
  });

  const poller = scope.poll(
    async (signal) => {
      if (refused) return;
      const mine = generation;
      const [events, posture, windows] = await Promise.all([
        securityApi.events({
          open: filters.open ? "true" : "",
          severity: filters.severity,
          kind: filters.kind,
          limit: PAGE_SIZE,
          offset: (filters.page - 1) * PAGE_SIZE,
        }, { signal }),
        securityApi.posture({}, { signal }),
        securityApi.maintenance({ signal }),
      ]);
      if (!scope.active || mine !== generation) return;
      first = false;
      const next = { events: JSON.stringify(events), posture: JSON.stringify(posture), windows: JSON.stringify(windows) };
      if (next.posture !== shown.posture) renderPosture(posture);
      if (next.windows !== shown.windows) renderWindows(windows);
      // Redraw when the data changed (relative times keep themselves current).
      if (next.events !== shown.events) renderTable(events);
      shown = next;
    },
    5000,
    {
      onError: (error) => {
        if (error instanceof ApiError && error.status === 403) {
          refused = true;
          renderRefused(body, me.role, error.detail);
          return;
        }
        if (first) render(table, errorState(error, "Could not load the security events"));
      },
    },
  );

  const changed = () => {
    generation += 1;
    shown = { ...shown, events: "" };
    persist();
    render(table, loadingState("Loading security events…"));
    poller.now();
  };

  function renderPosture(posture) {
    const tiles = SEVERITIES.map((s) => {
      const open = posture.open_by_severity[s] || 0;
      const all = posture.by_severity[s] || 0;
      const acknowledged = Math.max(0, all - open);
      return html`<button type="button" class="card kpi sec-tile secsev-${s}${open ? " has-open" : ""}" data-tile="${s}"
          aria-pressed="${String(filters.severity === s)}" title="Show ${s} events">
        <div class="kpi-label">${titleCase(s)}</div>
        <div class="kpi-value" data-open-count="${s}">${formatInt(open)}<span class="unit">open</span></div>
        <div class="kpi-foot"><span data-acknowledged-count="${s}">${formatInt(acknowledged)}</span> acknowledged</div>
      </button>`;
    });
    render($("[data-posture]"), html`${tiles}
      <div class="card kpi"><div class="kpi-label">Devices at risk</div>
        <div class="kpi-value" data-devices-at-risk>${formatInt(posture.devices_at_risk)}</div>
        <div class="kpi-foot">with an open high or critical event</div></div>
      <div class="card kpi"><div class="kpi-label">Occurrences</div>
        <div class="kpi-value" data-occurrences>${formatInt(posture.occurrences)}</div>
        <div class="kpi-foot">${formatInt(posture.open)} open · ${formatInt(posture.acknowledged)} acknowledged events</div></div>`);
    const dropped = $("[data-dropped]");
    dropped.hidden = !posture.writes_dropped;
    dropped.textContent = posture.writes_dropped
      ? `${formatInt(posture.writes_dropped)} event writes were dropped since the platform started (the monitor's queue was full); the next update of those events writes them again.`
      : "";
    const kinds = Object.entries(posture.by_kind).filter(([, n]) => n > 0).sort((a, b) => b[1] - a[1] || a[0].localeCompare(b[0]));
    const max = Math.max(1, ...kinds.map(([, n]) => n));
    render($("[data-kinds]"), kinds.length
      ? html`<ul class="sec-kinds">${kinds.map(([k, n]) => html`<li><button type="button" data-kind-filter="${k}"
          aria-pressed="${String(filters.kind === k)}" title="Show ${kindName(k)} events">
          <span class="sec-kind-name">${kindName(k)}</span>
          <span class="sec-kind-bar"><i style="width:${((n / max) * 100).toFixed(1)}%"></i></span>
          <b class="num" data-kind-count="${k}">${formatInt(n)}</b></button></li>`)}</ul>`
      : emptyState("Nothing in the last 24 hours", "No sign-in attack, refusal, rate anomaly or firmware change was seen."));
  }

  function renderWindows(windows) {
    render($("[data-maintenance]"), windows.length
      ? html`<ul class="list sec-windows" data-windows>${windows.map((w) => html`<li data-window="${w.id}">
          <div class="what"><div class="main-line">${w.device_id
            ? html`<a href="#/devices/${encodeURIComponent(w.device_id)}">${w.device_id}</a>`
            : "Every device"}</div>
            <div class="sub" title="${w.reason}">${w.reason} · by ${w.created_by}</div></div>
          <div class="when" title="from ${formatDateTime(w.starts_at)}">until ${untilText(w.ends_at)}</div></li>`)}</ul>`
      : html`<div class="sec-empty-line faint" data-no-windows>No maintenance window open: every firmware or configuration change raises an event.</div>`);
  }

  function renderTable(events) {
    if (!events.items.length) {
      render(table, filters.open && !filters.severity && !filters.kind
        ? emptyState("No open security events", "Nothing needs a look. Switch to All to see acknowledged ones.")
        : emptyState("No security events match", "Try another filter."));
    } else {
      render(table, html`<table class="data sec-events" data-security-table>
        <thead><tr><th>Last seen</th><th>Severity</th><th>Kind</th><th>Subject</th><th>Summary</th>
          <th class="right">Count</th><th>Evidence</th><th>Status</th></tr></thead>
        <tbody>${events.items.map((e) => eventRows(e))}</tbody></table>`);
    }
    const from = events.total ? (filters.page - 1) * PAGE_SIZE + 1 : 0;
    const to = Math.min(events.total, (filters.page - 1) * PAGE_SIZE + events.items.length);
    $("[data-range]").textContent = events.total
      ? `Showing ${formatInt(from)}–${formatInt(to)} of ${formatInt(events.total)} ${filters.open ? "open " : ""}events`
      : "";
    const pages = Math.max(1, Math.ceil(events.total / PAGE_SIZE));
    $("[data-page]").textContent = `Page ${filters.page} of ${pages}`;
    $("[data-prev]").disabled = filters.page <= 1;
    $("[data-next]").disabled = filters.page >= pages;
  }

  function eventRows(e) {
    const open = !e.acknowledged_at;
    const isExpanded = expanded.has(e.id);
    const fields = Object.keys(e.evidence ?? {}).length;
    const status = open
      ? html`<span class="badge plain sec-open">Open</span>${canAct
        ? html` <button class="btn small" type="button" data-acknowledge="${e.id}">Acknowledge</button>` : ""}`
      : html`<span class="badge plain sec-acknowledged">Acknowledged</span>
        <div class="sec-sub">by ${e.acknowledged_by ?? "—"} · ${ago(e.acknowledged_at)}</div>`;
    return html`<tr data-event="${e.id}" data-state="${open ? "open" : "acknowledged"}" class="secsev-row-${e.severity}">
        <td class="nowrap">${ago(e.last_at)}${e.count > 1 || e.last_at !== e.at
          ? html`<div class="sec-sub" title="${formatDateTime(e.at)}">first ${formatDateTime(e.at).slice(5, 16)}</div>` : ""}</td>
        <td>${severityBadge(e.severity)}</td>
        <td class="nowrap">${kindCell(e)}</td>
        <td>${subjectCell(e)}</td>
        <td class="sec-summary">${e.summary}</td>
        <td class="right num">${formatInt(e.count)}</td>
        <td class="nowrap"><button class="btn small sec-evidence-toggle" type="button" data-evidence="${e.id}"
          aria-expanded="${String(isExpanded)}" ${fields ? "" : "disabled"}>${fields ? `${isExpanded ? "Hide" : "Show"} ${fields}` : "None"}</button></td>
        <td class="sec-status">${status}</td>
      </tr>
      <tr class="sec-evidence-row" data-evidence-row="${e.id}" ${isExpanded ? "" : "hidden"}>
        <td colspan="8">${evidenceList(e.evidence)}</td></tr>`;
  }

  // -- interactions ------------------------------------------------------------------------------

  const setSeverity = (severity) => {
    filters.severity = severity;
    filters.page = 1;
    $("[data-severity]").value = severity;
    for (const tile of outlet.querySelectorAll("[data-tile]")) tile.setAttribute("aria-pressed", String(tile.dataset.tile === severity));
    changed();
  };
  const setKind = (kind) => {
    filters.kind = kind;
    filters.page = 1;
    $("[data-kind]").value = kind;
    for (const b of outlet.querySelectorAll("[data-kind-filter]")) b.setAttribute("aria-pressed", String(b.dataset.kindFilter === kind));
    changed();
  };

  $("[data-scope]").addEventListener("click", (e) => {
    const button = e.target.closest("button[data-open]");
    if (!button) return;
    filters.open = button.dataset.open === "1";
    filters.page = 1;
    for (const b of outlet.querySelectorAll("[data-open]")) b.setAttribute("aria-pressed", String(b === button));
    changed();
  });
  $("[data-severity]").addEventListener("change", (e) => setSeverity(e.target.value));
  $("[data-kind]").addEventListener("change", (e) => setKind(e.target.value));
  $("[data-posture]").addEventListener("click", (e) => {
    const tile = e.target.closest("[data-tile]");
    if (tile) setSeverity(filters.severity === tile.dataset.tile ? "" : tile.dataset.tile);
  });
  $("[data-kinds]").addEventListener("click", (e) => {
    const button = e.target.closest("[data-kind-filter]");
    if (button) setKind(filters.kind === button.dataset.kindFilter ? "" : button.dataset.kindFilter);
  });
  $("[data-prev]").addEventListener("click", () => {
    filters.page = Math.max(1, filters.page - 1);
    changed();
  });
  $("[data-next]").addEventListener("click", () => {
    filters.page += 1;
    changed();
  });

  table.addEventListener("click", async (e) => {
    const toggle = e.target.closest("button[data-evidence]");
    if (toggle) {
      const id = toggle.dataset.evidence;
      const show = !expanded.has(id);
      if (show) expanded.add(id);
      else expanded.delete(id);
      const row = table.querySelector(`[data-evidence-row="${CSS.escape(id)}"]`);
      if (row) row.hidden = !show;
      toggle.setAttribute("aria-expanded", String(show));
      toggle.textContent = toggle.textContent.replace(show ? "Show" : "Hide", show ? "Hide" : "Show");
      return;
    }
    const button = e.target.closest("button[data-acknowledge]");
    if (!button) return;
    button.disabled = true;
    try {
      const event = await securityApi.acknowledge(button.dataset.acknowledge);
      toast("Security event acknowledged", `${kindName(event.kind)}: ${event.subject}`);
    } catch (error) {
      const title = error instanceof ApiError && error.status === 403
        ? "Only a tenant administrator acknowledges security events" : "Could not acknowledge the event";
      toast(title, describeError(error), "error");
    }
    generation += 1;
    poller.now();
  });

  const form = outlet.querySelector("[data-maintenance-form]");
  if (form) {
    form.until.value = localInputValue(new Date(Date.now() + 4 * 3600_000));
    api.devices({ limit: 1000 }, { signal: scope.signal }).then((devices) => {
      if (!scope.active) return;
      render(outlet.querySelector("#sec-device-list"), html`${(devices.items ?? []).map(
        (d) => html`<option value="${d.id}">${d.name ?? d.id}</option>`,
      )}`);
    }).catch(() => {}); // only suggestions: the field also takes a typed device id
    form.addEventListener("submit", async (e) => {
      e.preventDefault();
      const error = form.querySelector("[data-form-error]");
      const until = new Date(form.until.value);
      const hours = (until.getTime() - Date.now()) / 3600_000;
      let problem = "";
      if (Number.isNaN(hours)) problem = "Say until when.";
      else if (hours < 1 / 60) problem = "The window must end in the future (at least a minute from now).";
      else if (hours > MAX_WINDOW_HOURS) problem = "A window lasts at most 14 days.";
      else if (!form.reason.value.trim()) problem = "Give a reason, e.g. the change ticket.";
      error.hidden = !problem;
      error.textContent = problem;
      if (problem) return;
      const submit = form.querySelector("button[type=submit]");
      submit.disabled = true;
      try {
        const window_ = await securityApi.openMaintenance({
          device_id: form.device.value.trim(),
          hours: Math.round(hours * 1000) / 1000,
          reason: form.reason.value.trim(),
        });
        toast("Maintenance window opened", `${window_.device_id ?? "Every device"} until ${formatDateTime(window_.ends_at)}`);
        form.reason.value = "";
        form.device.value = "";
        form.until.value = localInputValue(new Date(Date.now() + 4 * 3600_000));
      } catch (failure) {
        error.hidden = false;
        error.textContent = describeError(failure);
      } finally {
        submit.disabled = false;
      }
      poller.now();
    });
  }
}

function maintenanceForm() {
  return html`<form class="sec-form" data-maintenance-form autocomplete="off">
    <div class="sec-form-title">Open a window</div>
    <div class="sec-form-fields">
      <label>Device <input type="text" name="device" list="sec-device-list" placeholder="every device" spellcheck="false" maxlength="64"></label>
      <label>Until <input type="datetime-local" name="until" required></label>
      <label class="grow">Reason <input type="text" name="reason" placeholder="e.g. CHG-1234 firmware 2.4 rollout" maxlength="500" required></label>
      <button class="btn primary" type="submit">Open window</button>
    </div>
    <datalist id="sec-device-list"></datalist>
    <div class="form-error" data-form-error role="alert" hidden></div>
  </form>`;
}

/** The API refused (or would refuse) this caller: say who may see security events. */
function renderRefused(host, role, detail = "") {
  const roleName = role ? role.replaceAll("_", " ") : "this";
  render(host, html`<section class="card sec-refused" data-security-refused>
    <div class="state-box"><svg class="sec-lock" viewBox="0 0 24 24" aria-hidden="true"><rect x="5" y="10.5" width="14" height="10" rx="2"
        fill="none" stroke="currentColor" stroke-width="1.8"/><path d="M8.5 10.5V7.5a3.5 3.5 0 0 1 7 0v3" fill="none"
        stroke="currentColor" stroke-width="1.8"/></svg>
      <div class="title">The security page needs a tenant administrator or an auditor</div>
      <div class="hint">Security events show where a tenant is weak, so only those who act on them (tenant
        administrators) or audit them (auditors) read them. You are signed in with the ${roleName} role; ask your
        administrator for access.</div>
      ${detail ? html`<div class="hint mono">${detail}</div>` : ""}</div></section>`);
}
