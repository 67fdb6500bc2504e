// Reference data that many pages need and that rarely changes: the tenant's sites and its
// thing models. Fetched once per tenant and kept for a minute (sites) or for the session
// (a thing-model version never changes once imported), so that a table refresh every few
// seconds does not refetch them.

import { api, getTenant } from "./api.js";

const SITE_TTL_MS = 60_000;
let sites = { tenant: null, at: 0, promise: null };
const models = new Map();

/** Sites of the current tenant as a Map id -> site. */
export async function siteMap() {
  const tenant = getTenant();
  if (sites.tenant !== tenant || !sites.promise || Date.now() - sites.at > SITE_TTL_MS) {
    const promise = api.sites().then((list) => new Map(list.map((s) => [s.id, s])));
    sites = { tenant, at: Date.now(), promise };
    // A failed fetch must not be cached.
    promise.catch(() => {
      if (sites.promise === promise) sites.promise = null;
    });
  }
  return sites.promise;
}

/** The display name of a site ("Suzhou machining plant / 苏州机加工厂"), or its id. */
export function siteName(map, siteId) {
  return map.get(siteId)?.name || siteId;
}

/** A thing model at the version a device uses (null when it cannot be read). */
export function thingModel(tenantId, modelId, version) {
  const key = `${tenantId}/${modelId}@${version ?? "latest"}`;
  if (!models.has(key)) {
    const promise = api.thingModel(tenantId, modelId, version).catch(() => {
      models.delete(key);
      return null;
    });
    models.set(key, promise);
  }
  return models.get(key);
}

/** Thing models of every device in `devices`, as a Map "model@version" -> model. */
export async function modelsOf(devices) {
  const wanted = new Map();
  for (const d of devices) wanted.set(`${d.model_id}@${d.model_version}`, d);
  const entries = await Promise.all(
    [...wanted].map(async ([key, d]) => [key, await thingModel(d.tenant_id, d.model_id, d.model_version)]),
  );
  return new Map(entries);
}

/** Forget everything (after switching tenant or signing out). */
export function forgetCatalog() {
  sites = { tenant: null, at: 0, promise: null };
  models.clear();
}
