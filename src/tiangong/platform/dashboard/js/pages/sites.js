// Sites: one card per factory with its networking rate, data coverage and devices online.
// The cards are also shown on the overview.

import { api, getTenant } from "../api.js";
import { siteMap } from "../catalog.js";
import { SEVERITIES, emptyState, errorState, loadingState, meter } from "../components.js";
import { formatInt, formatPercent } from "../format.js";
import { html, render } from "../html.js";

/** Open alarms per site: Map site id -> { count, severity } (the most severe one). */
export function alarmsBySite(alarms) {
  const bySite = new Map();
  const add = (key, a) => {
    const entry = bySite.get(key) ?? { count: 0, severity: "info" };
    entry.count += 1;
    if (SEVERITIES.indexOf(a.severity) < SEVERITIES.indexOf(entry.severity)) entry.severity = a.severity;
    bySite.set(key, entry);
  };
  for (const a of alarms) {
    add(a.site_id, a);
    add("*", a);
  }
  return bySite;
}

/** Site cards: the tenant total ("*") first, then each site; `openBySite` from alarmsBySite. */
export function siteCards(sites, kpis, openBySite = null) {
  const tenant = getTenant();
  const byId = new Map(kpis.filter((k) => !tenant || k.tenant_id === tenant).map((k) => [k.site_id, k]));
  if (!sites.size) return html`<div class="card">${emptyState("No sites yet", "Create a site through the API (POST /api/v1/sites), then register its devices.")}</div>`;
  const card = (site, k, total) => {
    const open = openBySite ? openBySite.get(site.id) ?? { count: 0 } : null;
    const alarms = open === null ? "" : open.count
      ? html`<span class="badge sev-${open.severity}" title="open alarms, the most severe is ${open.severity}">${formatInt(open.count)} open alarm${open.count === 1 ? "" : "s"}</span>`
      : html`<span class="badge plain" title="open alarms">No alarms</span>`;
    const stats = html`<div class="site-stats">
      <div class="site-stat"><div class="label">Networking</div><div class="value">${formatPercent(k?.networking_rate)}</div>${meter(k?.networking_rate)}</div>
      <div class="site-stat"><div class="label">Coverage</div><div class="value">${formatPercent(k?.coverage)}</div>${meter(k?.coverage, { tone: "accent" })}</div>
      <div class="site-stat"><div class="label">Online</div><div class="value">${formatInt(k?.online)}<span class="of"> / ${formatInt(k?.registered)}</span></div></div>
    </div>`;
    const head = html`<div class="site-card-head"><div><h3 title="${site.name}">${site.name}</h3>
      <div class="loc">${site.location || site.id}${site.timezone ? html` · ${site.timezone}` : ""}</div></div>${alarms}</div>`;
    return total
      ? html`<div class="card site-card total" data-site="*">${head}${stats}</div>`
      : html`<a class="card site-card" href="#/sites/${encodeURIComponent(site.id)}" data-site="${site.id}">${head}${stats}</a>`;
  };
  const total = byId.get("*");
  return html`${sites.size > 1 ? card({ id: "*", name: "All sites", location: `${sites.size} sites`, timezone: "" }, total, true) : ""}${[...sites.values()].map((s) => card(s, byId.get(s.id), false))}`;
}

export async function mount(outlet, _params, scope) {
  render(outlet, html`<div class="page-head"><div><h1>Sites</h1><div class="sub">Factories of this enterprise and their connectivity</div></div></div>
    <section class="grid sites" data-sites>${loadingState()}</section>`);
  const host = outlet.querySelector("[data-sites]");
  let first = true;
  scope.poll(
    async (signal) => {
      const [sites, kpis, alarms] = await Promise.all([siteMap(), api.kpis({ signal }), api.alarms({ open: true, limit: 1000 }, { signal })]);
      if (!scope.active) return;
      first = false;
      render(host, siteCards(sites, kpis, alarmsBySite(alarms.items)));
    },
    10_000,
    { onError: (error) => first && render(host, html`<div class="card">${errorState(error, "Could not load the sites")}</div>`) },
  );
}
