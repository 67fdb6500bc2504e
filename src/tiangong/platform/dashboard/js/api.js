// The REST API client: bearer token handling and one function per endpoint the dashboard uses.
//
// The token (an API token tg_..., or the session token tgs_... that signing in with a user name
// and password returns) lives in sessionStorage (gone when the tab closes) and only ever travels
// in the Authorization header: never in a query string, where it would end up in server logs
// and browser history.

const TOKEN_KEY = "tiangong.token";

/** An API call that did not succeed; `status` is the HTTP status (0 = no response). */
export class ApiError extends Error {
  constructor(status, detail) {
    super(detail);
    this.name = "ApiError";
    this.status = status;
    this.detail = detail;
  }
}

export function getToken() {
  return sessionStorage.getItem(TOKEN_KEY);
}

export function setToken(token) {
  sessionStorage.setItem(TOKEN_KEY, token.trim());
}

export function clearToken() {
  sessionStorage.removeItem(TOKEN_KEY);
}

/**
 * Take a token from a `#token=tg_...` sign-in link, keep it, and remove it from the address bar
 * (and from this history entry) so that it is not bookmarked, shared or shown on screen.
 */
export function takeTokenFromFragment() {
  const match = /^#token=([^&]+)(?:&next=(.*))?$/.exec(window.location.hash);
  if (!match) return false;
  setToken(decodeURIComponent(match[1]));
  const next = match[2] ? decodeURIComponent(match[2]) : "#/overview";
  const clean = window.location.pathname + window.location.search + (next.startsWith("#/") ? next : "#/overview");
  window.history.replaceState(null, "", clean);
  return true;
}

// The tenant the dashboard shows. A platform administrator sees every tenant and picks one;
// list endpoints are then filtered with ?tenant=. A tenant's own token may name only itself.
let currentTenant = null;

export function setTenant(tenantId) {
  currentTenant = tenantId;
}

export function getTenant() {
  return currentTenant;
}

function errorDetail(body, status) {
  const detail = body && body.detail;
  if (typeof detail === "string") return detail;
  // FastAPI validation errors: a list of {loc, msg}.
  if (Array.isArray(detail)) return detail.map((d) => d.msg || JSON.stringify(d)).join("; ");
  return `HTTP ${status}`;
}

/**
 * Call the API. `params` with null/undefined/"" values are left out; `scoped` adds ?tenant=.
 * A 401 forgets the token and tells the app (which shows the sign-in screen).
 */
export async function request(path, { method = "GET", params = {}, scoped = false, signal } = {}) {
  const url = new URL(path, window.location.origin);
  const all = scoped && currentTenant ? { tenant: currentTenant, ...params } : params;
  for (const [key, value] of Object.entries(all)) {
    if (value !== null && value !== undefined && value !== "") url.searchParams.set(key, value);
  }
  const token = getToken();
  let response;
  try {
    response = await fetch(url, {
      method,
      signal,
      headers: { Accept: "application/json", ...(token ? { Authorization: `Bearer ${token}` } : {}) },
      cache: "no-store",
    });
  } catch (error) {
    if (error.name === "AbortError") throw error;
    throw new ApiError(0, "the platform cannot be reached");
  }
  let body = null;
  try {
    body = await response.json();
  } catch {
    body = null;
  }
  if (response.status === 401) {
    clearToken();
    window.dispatchEvent(new CustomEvent("tiangong:unauthorized", { detail: errorDetail(body, 401) }));
  }
  if (!response.ok) throw new ApiError(response.status, errorDetail(body, response.status));
  return body;
}

/**
 * Sign in with a user name and password; keeps the session token. Throws an ApiError: 401 for a
 * wrong name or password, 429 after too many failures (the detail says how long to wait).
 */
export async function login(username, password) {
  let response;
  try {
    response = await fetch("/api/v1/auth/login", {
      method: "POST",
      headers: { Accept: "application/json", "Content-Type": "application/json" },
      body: JSON.stringify({ username: username.trim(), password }),
      cache: "no-store",
    });
  } catch {
    throw new ApiError(0, "the platform cannot be reached");
  }
  let body = null;
  try {
    body = await response.json();
  } catch {
    body = null;
  }
  if (!response.ok) throw new ApiError(response.status, errorDetail(body, response.status));
  setToken(body.token);
  return body;
}

/** Sign out: a session is ended on the server (an API token stays valid), then forgotten here. */
export async function logout() {
  const token = getToken();
  clearToken();
  if (!token || !token.startsWith("tgs_")) return;
  try {
    await fetch("/api/v1/auth/logout", { method: "POST", headers: { Authorization: `Bearer ${token}` } });
  } catch {
    // Unreachable: the session still ends by itself after its idle timeout.
  }
}

const enc = encodeURIComponent;

/** The endpoints, by what they return. */
export const api = {
  me: (opts) => request("/api/v1/auth/me", opts),
  overview: (opts) => request("/api/v1/overview", { scoped: true, ...opts }),
  kpis: (opts) => request("/api/v1/kpis", { scoped: true, ...opts }),
  sites: (opts) => request("/api/v1/sites", { scoped: true, ...opts }),
  site: (id, opts) => request(`/api/v1/sites/${enc(id)}`, { scoped: true, ...opts }),
  siteKpis: (id, start, opts) =>
    request(`/api/v1/sites/${enc(id)}/kpis`, { scoped: true, params: { start }, ...opts }),
  siteLinks: (id, opts) => request(`/api/v1/sites/${enc(id)}/links`, { scoped: true, ...opts }),
  // Site "*" (the tenant total) has no /sites/{id}; its history is /kpis/history.
  tenantKpiHistory: (start, opts) =>
    request("/api/v1/kpis/history", { scoped: true, params: { start }, ...opts }),
  devices: (params, opts) => request("/api/v1/devices", { scoped: true, params, ...opts }),
  device: (id, opts) => request(`/api/v1/devices/${enc(id)}`, opts),
  latest: (id, opts) => request(`/api/v1/devices/${enc(id)}/latest`, opts),
  telemetry: (id, params, opts) => request(`/api/v1/devices/${enc(id)}/telemetry`, { params, ...opts }),
  events: (id, limit, opts) => request(`/api/v1/devices/${enc(id)}/events`, { params: { limit }, ...opts }),
  transitions: (id, limit, opts) =>
    request(`/api/v1/devices/${enc(id)}/transitions`, { params: { limit }, ...opts }),
  alarms: (params, opts) => request("/api/v1/alarms", { scoped: true, params, ...opts }),
  acknowledgeAlarm: (id) => request(`/api/v1/alarms/${enc(id)}/acknowledge`, { method: "POST" }),
  clearAlarm: (id) => request(`/api/v1/alarms/${enc(id)}/clear`, { method: "POST" }),
  thingModels: (opts) => request("/api/v1/thing-models", { scoped: true, ...opts }),
  thingModel: (tenant, id, version, opts) =>
    request(`/api/v1/thing-models/${enc(id)}`, { params: { tenant, version }, ...opts }),
};

// -- Security monitoring (pages/security.js) ------------------------------------------------------

/** POST a JSON body, with the same token handling and errors as `request`. */
async function postJson(path, payload, { signal } = {}) {
  const token = getToken();
  let response;
  try {
    response = await fetch(new URL(path, window.location.origin), {
      method: "POST",
      signal,
      headers: {
        Accept: "application/json",
        "Content-Type": "application/json",
        ...(token ? { Authorization: `Bearer ${token}` } : {}),
      },
      body: JSON.stringify(payload),
      cache: "no-store",
    });
  } catch (error) {
    if (error.name === "AbortError") throw error;
    throw new ApiError(0, "the platform cannot be reached");
  }
  let body = null;
  try {
    body = await response.json();
  } catch {
    body = null;
  }
  if (response.status === 401) {
    clearToken();
    window.dispatchEvent(new CustomEvent("tiangong:unauthorized", { detail: errorDetail(body, 401) }));
  }
  if (!response.ok) throw new ApiError(response.status, errorDetail(body, response.status));
  return body;
}

/** Security events, posture and maintenance windows (access:admin or audit:read to read). */
export const securityApi = {
  events: (params, opts) => request("/api/v1/security/events", { scoped: true, params, ...opts }),
  posture: (params, opts) => request("/api/v1/security/posture", { scoped: true, params, ...opts }),
  acknowledge: (id) => request(`/api/v1/security/events/${enc(id)}/acknowledge`, { method: "POST" }),
  maintenance: (opts) => request("/api/v1/security/maintenance", { scoped: true, ...opts }),
  // A platform administrator names the tenant shown; a tenant's own caller may name only itself.
  openMaintenance: ({ device_id, hours, reason }) =>
    postJson("/api/v1/security/maintenance", { device_id: device_id || null, hours, reason, tenant_id: currentTenant }),
};

// -- OEE (pages/oee.js) ---------------------------------------------------------------------------

/** OEE by shift or day and the downtime Pareto of a site (`site`) or a device (`device`). */
export const oeeApi = {
  figures: (params, opts) => request("/api/v1/apps/oee", { scoped: true, params, ...opts }),
  downtime: (params, opts) => request("/api/v1/apps/oee/downtime", { scoped: true, params, ...opts }),
};

// -- Equipment health (pages/health.js) -----------------------------------------------------------

/** Fleet health and RUL, history, sensor anomalies, maintenance work orders, the RUL models. */
export const healthApi = {
  fleet: (opts) => request("/api/v1/apps/health", { scoped: true, ...opts }),
  history: (device, opts) => request(`/api/v1/apps/health/${encodeURIComponent(device)}/history`, opts),
  anomalies: (params, opts) => request("/api/v1/apps/health/anomalies", { scoped: true, params, ...opts }),
  workOrders: (params, opts) => request("/api/v1/apps/work-orders", { scoped: true, params, ...opts }),
  transition: (id, action, note = null) =>
    postJson(`/api/v1/apps/work-orders/${encodeURIComponent(id)}/transition`, { action, note }),
  models: (opts) => request("/api/v1/apps/models", opts),
};

// -- Plant energy (pages/plant-energy.js) ---------------------------------------------------------

/** A site's (`site`, `line`) or a device's (`device`) energy, cost by band, and anomalies. */
export const plantEnergyApi = {
  consumption: (params, opts) => request("/api/v1/apps/energy", { scoped: true, params, ...opts }),
  anomalies: (params, opts) => request("/api/v1/apps/energy/anomalies", { scoped: true, params, ...opts }),
  tariff: (site, opts) => request(`/api/v1/apps/energy/tariffs/${encodeURIComponent(site)}`, { scoped: true, ...opts }),
};
