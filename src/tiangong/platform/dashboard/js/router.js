// Hash routing: #/overview, #/devices?site=suzhou&page=2, #/devices/<id>, #/alarms,
// #/sites, #/sites/<id>. The hash keeps the server a plain static file host, and filters live
// in the hash's query so that back/forward and reloads keep them.

import { PageScope } from "./live.js";

/** The current route: { path, parts, query }. */
export function currentRoute() {
  const hash = window.location.hash.replace(/^#/, "") || "/overview";
  const [path, search = ""] = hash.split("?");
  const parts = path.split("/").filter(Boolean).map(decodeURIComponent);
  return { path, parts, query: new URLSearchParams(search) };
}

/** Replace the current route's query without adding a history entry or re-rendering. */
export function updateQuery(changes) {
  const { path, query } = currentRoute();
  for (const [key, value] of Object.entries(changes)) {
    if (value === null || value === undefined || value === "") query.delete(key);
    else query.set(key, value);
  }
  const search = query.toString();
  window.history.replaceState(null, "", `#${path}${search ? `?${search}` : ""}`);
}

export class Router {
  /**
   * @param {HTMLElement} outlet where pages render
   * @param {Array<{match: (parts) => object|null, load: () => Promise<module>, nav: string}>} routes
   * @param {(nav: string) => void} onNavigate marks the active nav item
   */
  constructor(outlet, routes, onNavigate) {
    this.outlet = outlet;
    this.routes = routes;
    this.onNavigate = onNavigate;
    this.scope = null;
    this.generation = 0;
    this.onHashChange = () => this.show();
    window.addEventListener("hashchange", this.onHashChange);
  }

  async show() {
    const generation = ++this.generation;
    const route = currentRoute();
    let chosen = null;
    let params = null;
    for (const r of this.routes) {
      params = r.match(route.parts);
      if (params) {
        chosen = r;
        break;
      }
    }
    if (!chosen) {
      window.location.replace("#/overview");
      return;
    }
    if (this.scope) this.scope.dispose();
    const scope = new PageScope();
    this.scope = scope;
    this.onNavigate(chosen.nav);
    window.scrollTo(0, 0);
    const page = await chosen.load();
    // The user may have navigated on while the module loaded.
    if (generation !== this.generation) return;
    await page.mount(this.outlet, { ...params, query: route.query }, scope);
  }

  stop() {
    window.removeEventListener("hashchange", this.onHashChange);
    if (this.scope) this.scope.dispose();
    this.scope = null;
  }
}
