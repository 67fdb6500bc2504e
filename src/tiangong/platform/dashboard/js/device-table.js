// The device table of the Devices page and of each site page: filters, pagination, state
// badges, last seen, and each visible device's key live values.
//
// Live values cost one /latest request per device, so only the rows on screen are fetched
// (at most a page), a few at a time, and the previous values stay on screen meanwhile.

import { api } from "./api.js";
import { modelsOf, siteMap, siteName } from "./catalog.js";
import { DEVICE_STATES, ago, emptyState, errorState, loadingState, stateBadge } from "./components.js";
import { displayValue, formatInt, titleCase } from "./format.js";
import { html, render } from "./html.js";

const PAGE_SIZES = [25, 50, 100];
const LIVE_VALUES = 3;
const CONCURRENCY = 6;

async function mapLimit(items, limit, fn) {
  const results = new Array(items.length);
  let next = 0;
  const worker = async () => {
    while (next < items.length) {
      const i = next;
      next += 1;
      try {
        results[i] = await fn(items[i]);
      } catch (error) {
        if (error.name === "AbortError") throw error;
        results[i] = null;
      }
    }
  };
  await Promise.all(Array.from({ length: Math.min(limit, items.length) }, worker));
  return results;
}

/** "Suzhou machining plant / 苏州机加工厂" as a main line and a muted second line. */
export function twoLine(name, fallback) {
  const [main, ...rest] = String(name || fallback).split(" / ");
  return html`<span class="dev-name" style="font-weight:500">${main}</span>${rest.length ? html`<span class="dev-id" style="font-family:inherit">${rest.join(" / ")}</span>` : ""}`;
}

/**
 * The values worth a glance, in thing-model order (the order the model's author declared):
 * the first enum (machine state) and the first few numeric properties that have a value.
 */
export function keyValues(model, latest) {
  if (!latest) return [];
  const byMetric = new Map(latest.values.map((v) => [v.metric, v]));
  const order = model ? model.properties : latest.values.map((v) => ({ id: v.metric, type: typeof v.value === "string" ? "enum" : "float" }));
  const picked = [];
  const state = order.find((p) => p.type === "enum" && byMetric.has(p.id));
  if (state) picked.push(byMetric.get(state.id));
  for (const p of order) {
    if (picked.length >= LIVE_VALUES + (state ? 1 : 0)) break;
    if ((p.type === "float" || p.type === "int") && byMetric.has(p.id)) picked.push(byMetric.get(p.id));
  }
  return picked;
}

function liveChips(values, model) {
  if (!values.length) return html`<span class="faint">—</span>`;
  const types = new Map((model?.properties ?? []).map((p) => [p.id, p.type]));
  return html`<div class="chips">${values.map((v) => {
    const d = displayValue(v.value, v.unit, types.get(v.metric));
    return d.kind === "number"
      ? html`<span class="chip" title="${v.name}"><b>${d.text}</b>${d.unit ? html`<span class="unit">${d.unit}</span>` : ""}</span>`
      : html`<span class="chip enum" title="${v.name}">${d.text}</span>`;
  })}</div>`;
}

export class DeviceTable {
  /**
   * @param {HTMLElement} host
   * @param {PageScope} scope the page's scope (polls stop with it)
   * @param {object} options fixedSite: show one site only; query: initial filters
   *   (URLSearchParams); onChange(filters): persist filters (e.g. in the hash).
   */
  constructor(host, scope, { fixedSite = null, query = new URLSearchParams(), onChange = () => {} } = {}) {
    this.host = host;
    this.scope = scope;
    this.fixedSite = fixedSite;
    this.onChange = onChange;
    this.filters = {
      site: fixedSite ?? query.get("site") ?? "",
      state: DEVICE_STATES.includes(query.get("state")) ? query.get("state") : "",
      page: Math.max(1, Number.parseInt(query.get("page") ?? "1", 10) || 1),
      size: PAGE_SIZES.includes(Number(query.get("size"))) ? Number(query.get("size")) : PAGE_SIZES[0],
      search: query.get("q") ?? "",
    };
    this.data = null;
    this.latest = new Map();
    // Bumped by every filter change: a refresh that started before it must not render.
    this.generation = 0;
    this.build();
  }

  build() {
    render(this.host, html`<div class="toolbar">
        <input type="search" placeholder="Search name or id on this page" aria-label="Search devices" data-search value="${this.filters.search}">
        ${this.fixedSite ? "" : html`<label class="field">Site <select data-site><option value="">All sites</option></select></label>`}
        <div class="segmented" role="group" aria-label="State" data-states>
          ${["", ...DEVICE_STATES].map((s) => html`<button type="button" data-state="${s}" aria-pressed="${String(this.filters.state === s)}">${s ? titleCase(s) : "All"}<span class="faint" data-count="${s || "all"}"></span></button>`)}
        </div>
        <span class="spacer"></span>
        <label class="field">Rows <select data-size>${PAGE_SIZES.map((n) => html`<option value="${n}" ${n === this.filters.size ? "selected" : ""}>${n}</option>`)}</select></label>
      </div>
      <div class="table-wrap" data-table>${loadingState("Loading devices…")}</div>
      <div class="card-foot"><span data-range>&nbsp;</span>
        <div class="pager"><button class="btn small" type="button" data-prev>← Previous</button>
        <span class="num" data-page></span>
        <button class="btn small" type="button" data-next>Next →</button></div></div>`);
    const $ = (sel) => this.host.querySelector(sel);
    $("[data-search]").addEventListener("input", (e) => {
      this.filters.search = e.target.value;
      this.onChange(this.filters);
      this.renderRows();
    });
    $("[data-states]").addEventListener("click", (e) => {
      const button = e.target.closest("button[data-state]");
      if (!button) return;
      this.filters.state = button.dataset.state;
      this.filters.page = 1;
      for (const b of this.host.querySelectorAll("[data-state]")) b.setAttribute("aria-pressed", String(b === button));
      this.changed();
    });
    $("[data-size]").addEventListener("change", (e) => {
      this.filters.size = Number(e.target.value);
      this.filters.page = 1;
      this.changed();
    });
    const site = $("[data-site]");
    if (site) {
      site.addEventListener("change", () => {
        this.filters.site = site.value;
        this.filters.page = 1;
        this.changed();
      });
    }
    $("[data-prev]").addEventListener("click", () => {
      this.filters.page = Math.max(1, this.filters.page - 1);
      this.changed();
    });
    $("[data-next]").addEventListener("click", () => {
      this.filters.page += 1;
      this.changed();
    });
    let first = true;
    this.poller = this.scope.poll((signal) => this.refresh(signal).then(() => { first = false; }), 5000, {
      onError: (error) => first && render(this.host.querySelector("[data-table]"), errorState(error, "Could not load the devices")),
    });
  }

  changed() {
    this.generation += 1;
    this.onChange(this.filters);
    render(this.host.querySelector("[data-table]"), loadingState("Loading devices…"));
    this.data = null;
    this.poller.now();
  }

  async refresh(signal) {
    const generation = this.generation;
    const f = { ...this.filters };
    const [page, sites, overview] = await Promise.all([
      api.devices({ limit: f.size, offset: (f.page - 1) * f.size, site: f.site, state: f.state }, { signal }),
      siteMap(),
      this.fixedSite ? null : api.overview({ signal }),
    ]);
    // Past the last page (devices were removed, or a stale link): go to the last one.
    if (!page.items.length && page.total > 0 && f.page > 1 && generation === this.generation) {
      this.filters.page = Math.ceil(page.total / f.size);
      this.onChange(this.filters);
      return this.refresh(signal);
    }
    const models = await modelsOf(page.items);
    const latest = await mapLimit(page.items.filter((d) => d.state !== "decommissioned"), CONCURRENCY, (d) => api.latest(d.id, { signal }));
    if (!this.scope.active || generation !== this.generation) return undefined;
    for (const l of latest) if (l) this.latest.set(l.device_id, l);
    this.data = { page, sites, models };
    this.renderFilters(sites, overview);
    this.renderRows();
    return undefined;
  }

  renderFilters(sites, overview) {
    const select = this.host.querySelector("[data-site]");
    if (select && select.options.length !== sites.size + 1) {
      render(select, html`<option value="">All sites</option>${[...sites.values()].map(
        (s) => html`<option value="${s.id}" ${s.id === this.filters.site ? "selected" : ""}>${s.name}</option>`,
      )}`);
    }
    if (overview) {
      const counts = overview.devices || {};
      const all = Object.values(counts).reduce((a, b) => a + b, 0);
      for (const el of this.host.querySelectorAll("[data-count]")) {
        const n = el.dataset.count === "all" ? all : counts[el.dataset.count] || 0;
        el.textContent = this.filters.site ? "" : ` ${formatInt(n)}`;
      }
    }
  }

  renderRows() {
    if (!this.data) return;
    const { page, sites, models } = this.data;
    const f = this.filters;
    const needle = f.search.trim().toLowerCase();
    const rows = needle ? page.items.filter((d) => `${d.name} ${d.id}`.toLowerCase().includes(needle)) : page.items;
    const table = this.host.querySelector("[data-table]");
    if (!page.items.length) {
      render(table, emptyState("No devices match", f.state || f.site ? "Try another site or state filter." : "Register devices through the API (POST /api/v1/devices)."));
    } else if (!rows.length) {
      render(table, emptyState(`No device on this page matches “${f.search}”`, "The search looks at the devices on this page; clear it or change page."));
    } else {
      render(table, html`<table class="data" data-devices>
        <thead><tr><th>Device</th><th>State</th><th>Thing model</th>${this.fixedSite ? "" : html`<th>Site</th>`}<th>Live values</th><th class="right">Last seen</th></tr></thead>
        <tbody>${rows.map((d) => {
          const model = models.get(`${d.model_id}@${d.model_version}`);
          return html`<tr data-device="${d.id}" class="row-${d.state}">
            <td><a class="dev-name" href="#/devices/${encodeURIComponent(d.id)}" title="${d.name || d.id}">${d.name || d.id}</a><span class="dev-id">${d.id}</span></td>
            <td>${stateBadge(d.state)}</td>
            <td>${twoLine(model?.name, d.model_id)}</td>
            ${this.fixedSite ? "" : html`<td>${twoLine(siteName(sites, d.site_id), d.site_id)}</td>`}
            <td data-live-values>${liveChips(keyValues(model, this.latest.get(d.id)), model)}</td>
            <td class="right nowrap">${ago(d.last_seen_at)}</td></tr>`;
        })}</tbody></table>`);
    }
    const from = page.total ? (f.page - 1) * f.size + 1 : 0;
    const to = Math.min(page.total, (f.page - 1) * f.size + page.items.length);
    this.host.querySelector("[data-range]").textContent = page.total ? `Showing ${formatInt(from)}–${formatInt(to)} of ${formatInt(page.total)} devices` : "No devices";
    const pages = Math.max(1, Math.ceil(page.total / f.size));
    this.host.querySelector("[data-page]").textContent = `Page ${f.page} of ${pages}`;
    this.host.querySelector("[data-prev]").disabled = f.page <= 1;
    this.host.querySelector("[data-next]").disabled = f.page >= pages;
  }
}
