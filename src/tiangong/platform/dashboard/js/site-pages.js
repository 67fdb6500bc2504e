// Shared by the pages that show one site at a time (OEE, plant energy): the tenant's sites, or
// the reason the page cannot show any.

import { api } from "./api.js";
import { emptyState, errorState } from "./components.js";
import { html, render } from "./html.js";

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
