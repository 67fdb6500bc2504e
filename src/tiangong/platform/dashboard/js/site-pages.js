// Shared by the pages that show one site at a time (OEE, plant energy): the tenant's sites, or
// the reason the page cannot show any.

import { api } from "./api.js";
import { emptyState, errorState } from "./components.js";
import { html, render } from "./html.js";
import { updateQuery } from "./router.js";

/**
 * The tenant's sites, or null once `outlet` says why there are none to show (the request
 * failed, or no site is registered yet). Also null when the page was left meanwhile.
 */
export async function sitesOrExplain(outlet, scope, emptyTitle, emptyText) {
  let sites;
  try {
    sites = await api.sites({ signal: scope.signal });
  } catch (error) {
    if (error.name === "AbortError") return null;
    render(outlet, html`<div class="card">${errorState(error, "Could not load the sites")}</div>`);
    return null;
  }
  if (!scope.active) return null;
  if (!sites.length) {
    render(outlet, html`<div class="card">${emptyState(emptyTitle, emptyText)}</div>`);
    return null;
  }
  return sites;
}

/** The toolbar of a per-site page: the site, the range and the grouping (`state` holds them). */
export function siteToolbar(sites, state, ranges, groups) {
  return html`<section class="card"><div class="toolbar">
      <label class="field">Site <select data-site>${sites.map(
        (s) => html`<option value="${s.id}" ${s.id === state.site ? "selected" : ""}>${s.name || s.id}</option>`,
      )}</select></label>
      <div class="segmented" role="group" aria-label="Range" data-ranges>${Object.entries(ranges).map(
        ([key, label]) => html`<button type="button" data-range="${key}" aria-pressed="${String(key === state.range)}">${label}</button>`,
      )}</div>
      <div class="segmented" role="group" aria-label="Grouping" data-groups>${Object.entries(groups).map(
        ([key, label]) => html`<button type="button" data-by="${key}" aria-pressed="${String(key === state.by)}">${label}</button>`,
      )}</div>
      <span class="spacer"></span><span class="sub" data-zone></span></div></section>`;
}

/**
 * Wire the toolbar of `siteToolbar`: each change updates `state` (a new range may also move the
 * grouping, through `onRange`), the buttons, the address, and then calls `changed`.
 */
export function bindSiteToolbar(outlet, state, changed, onRange = () => {}) {
  const press = (attr, value) => {
    for (const b of outlet.querySelectorAll(`[data-${attr}]`)) b.setAttribute("aria-pressed", String(b.dataset[attr] === value));
  };
  const update = () => {
    press("range", state.range);
    press("by", state.by);
    updateQuery({ site: state.site, range: state.range, by: state.by });
    changed();
  };
  outlet.querySelector("[data-site]").addEventListener("change", (e) => {
    state.site = e.target.value;
    update();
  });
  outlet.querySelector("[data-ranges]").addEventListener("click", (e) => {
    const button = e.target.closest("button[data-range]");
    if (!button) return;
    state.range = button.dataset.range;
    onRange(state);
    update();
  });
  outlet.querySelector("[data-groups]").addEventListener("click", (e) => {
    const button = e.target.closest("button[data-by]");
    if (!button) return;
    state.by = button.dataset.by;
    update();
  });
}
