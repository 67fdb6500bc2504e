// The dashboard's entry point: sign-in, the header (product, tenant, navigation, live
// indicator) and the router that shows one page at a time.

import { ApiError, api, clearToken, getToken, login, logout, setTenant, setToken, takeTokenFromFragment } from "./api.js";
import { forgetCatalog } from "./catalog.js";
import { describeError, startClock } from "./components.js";
import { html, render } from "./html.js";
import { PageScope, liveStatus } from "./live.js";
import { Router } from "./router.js";

const TENANT_KEY = "tiangong.tenant";
const root = document.getElementById("app");

const routes = [
  { nav: "overview", match: (p) => (p.length === 1 && p[0] === "overview" ? {} : null), load: () => import("./pages/overview.js") },
  { nav: "devices", match: (p) => (p.length === 1 && p[0] === "devices" ? {} : null), load: () => import("./pages/devices.js") },
  { nav: "devices", match: (p) => (p.length === 2 && p[0] === "devices" ? { id: p[1] } : null), load: () => import("./pages/device.js") },
  { nav: "alarms", match: (p) => (p.length === 1 && p[0] === "alarms" ? {} : null), load: () => import("./pages/alarms.js") },
  { nav: "sites", match: (p) => (p.length === 1 && p[0] === "sites" ? {} : null), load: () => import("./pages/sites.js") },
  { nav: "sites", match: (p) => (p.length === 2 && p[0] === "sites" ? { id: p[1] } : null), load: () => import("./pages/site.js") },
  { nav: "national", match: (p) => (p.length === 1 && p[0] === "national" ? {} : null), load: () => import("./pages/national.js") },
  { nav: "energy", match: (p) => (p.length === 1 && p[0] === "energy" ? {} : null), load: () => import("./pages/energy.js") },
  { nav: "security", match: (p) => (p.length === 1 && p[0] === "security" ? {} : null), load: () => import("./pages/security.js") },
  { nav: "health", match: (p) => (p.length === 1 && p[0] === "health" ? {} : null), load: () => import("./pages/health.js") },
  { nav: "oee", match: (p) => (p.length === 1 && p[0] === "oee" ? {} : null), load: () => import("./pages/oee.js") },
  { nav: "plant-energy", match: (p) => (p.length === 1 && p[0] === "plant-energy" ? {} : null), load: () => import("./pages/plant-energy.js") },
];

const LOGO = html`<svg viewBox="0 0 32 32" aria-hidden="true"><path d="M8 10h16M10 16h12M16 10v14M10 24l6-8 6 8"
  fill="none" stroke="#7cc3ff" stroke-width="2.6" stroke-linecap="round" stroke-linejoin="round"/></svg>`;

let router = null;
let shell = null; // the header's own refresh, independent of pages

function stopShell() {
  if (router) router.stop();
  if (shell) shell.dispose();
  router = null;
  shell = null;
}

/** The sign-in screen: a user name and password, or an API token (or the link `tiangong up` prints). */
function showSignIn(message = "", isError = false) {
  stopShell();
  document.title = "Sign in · Tiangong 天工";
  render(root, html`<div class="signin">
    <form class="signin-card" autocomplete="off" data-signin>
      <div class="brand"><span class="brand-mark">${LOGO}</span>
        <span class="brand-name">Tiangong<span class="zh">天工</span></span></div>
      <h1>Sign in</h1>
      <p>Industrial internet platform. Sign in to see your plants, devices and alarms.</p>
      ${message ? html`<div class="${isError ? "form-error" : "form-note muted"}" role="alert">${message}</div>` : ""}
      <div data-login>
        <label for="username">User name</label>
        <input id="username" name="username" autocomplete="username" spellcheck="false" autofocus>
        <label for="password">Password</label>
        <input id="password" name="password" type="password" autocomplete="current-password">
        <button class="btn primary" type="button" data-login-submit>Sign in</button>
      </div>
      <p class="hint">Or use an API token:</p>
      <label for="token">API token</label>
      <input id="token" name="token" type="password" placeholder="tg_…" spellcheck="false">
      <button class="btn" type="submit">Sign in with the token</button>
      <p class="hint"><code>tiangong up</code> prints a sign-in link with the administrator token and the
        password of its <code>admin</code> user; both are also kept in the data directory. Users and tokens
        come from your administrator.</p>
    </form>
  </div>`);
  const form = root.querySelector("[data-signin]");
  const signInWithPassword = async () => {
    form.querySelector("[data-login-submit]").disabled = true;
    try {
      await login(form.username.value, form.password.value);
      await start();
    } catch (error) {
      clearToken();
      const text = error instanceof ApiError && error.status === 401 ? "Wrong user name or password." : describeError(error);
      showSignIn(text, true);
    }
  };
  form.querySelector("[data-login-submit]").addEventListener("click", signInWithPassword);
  form.password.addEventListener("keydown", (event) => {
    if (event.key === "Enter") {
      event.preventDefault();
      signInWithPassword();
    }
  });
  form.addEventListener("submit", async (event) => {
    event.preventDefault();
    if (!form.token.value.trim()) {
      if (form.username.value) await signInWithPassword();
      return;
    }
    const button = form.querySelector("button[type=submit]");
    button.disabled = true;
    setToken(form.token.value);
    try {
      await start();
    } catch (error) {
      clearToken();
      const text = error instanceof ApiError && error.status === 401 ? "That token was not accepted." : describeError(error);
      showSignIn(text, true);
    }
  });
}

function chooseTenant(tenants) {
  if (!tenants.length) return null;
  const stored = sessionStorage.getItem(TENANT_KEY);
  return tenants.find((t) => t.id === stored) ?? tenants[0];
}

function tenantMarkup(tenants, chosen) {
  if (!chosen) return html`<span class="tenant-name">No tenants yet</span>`;
  if (tenants.length === 1) return html`<span class="tenant-name" title="${chosen.name}" data-tenant="${chosen.id}">${chosen.name}</span>`;
  return html`<label class="sr-only" for="tenant-select">Tenant</label>
    <select id="tenant-select" data-tenant-select>${tenants.map(
      (t) => html`<option value="${t.id}" ${t.id === chosen.id ? "selected" : ""}>${t.name}</option>`,
    )}</select>`;
}

/** Verify the token, then build the header and start routing. Throws when the token is refused. */
async function start() {
  setTenant(null);
  // An auditor reads the audit trail and security events only: no overview for it.
  const me = await api.me();
  const readsDevices = me.scopes.includes("devices:read");
  const overview = readsDevices
    ? await api.overview()
    : { tenants: me.tenant_id ? [{ id: me.tenant_id, name: me.tenant_id }] : [] };
  const tenants = overview.tenants;
  const tenant = chooseTenant(tenants);
  setTenant(tenant?.id ?? null);
  document.title = "Tiangong 天工";
  render(root, html`<header class="header">
      <a class="brand" href="#/overview" title="Overview"><span class="brand-mark">${LOGO}</span>
        <span class="brand-name">Tiangong<span class="zh">天工</span></span></a>
      <div class="tenant">${tenantMarkup(tenants, tenant)}</div>
      <nav class="nav" aria-label="Main">
        <a href="#/overview" data-nav="overview">Overview</a>
        <a href="#/devices" data-nav="devices">Devices</a>
        <a href="#/alarms" data-nav="alarms">Alarms <span class="count" data-alarm-count hidden></span></a>
        <a href="#/sites" data-nav="sites">Sites</a>
        <a href="#/oee" data-nav="oee">OEE</a>
        <a href="#/plant-energy" data-nav="plant-energy" title="This plant's energy (能耗管理)">Energy</a>
        <a href="#/health" data-nav="health">Health</a>
        <a href="#/security" data-nav="security">Security</a>
        <span class="nav-gap" aria-hidden="true"></span>
        <a href="#/national" data-nav="national" title="National data center (国家工业互联网大数据中心)">National</a>
        <a href="#/energy" data-nav="energy" title="Energy industries in the national data">Energy sector</a>
      </nav>
      <div class="header-right">
        <div class="live" data-live data-status="idle"><span class="live-dot"></span><span class="live-text">Connecting…</span></div>
        <button class="btn-header" type="button" data-signout>Sign out</button>
      </div>
    </header>
    <main class="main" id="outlet"></main>`);
  liveStatus.attach(root.querySelector("[data-live]"));
  root.querySelector("[data-signout]").addEventListener("click", async () => {
    await logout();
    forgetCatalog();
    showSignIn("You have signed out.");
  });
  const select = root.querySelector("[data-tenant-select]");
  if (select) {
    select.addEventListener("change", () => {
      sessionStorage.setItem(TENANT_KEY, select.value);
      setTenant(select.value);
      forgetCatalog();
      router.show();
    });
  }
  const navLinks = [...root.querySelectorAll("[data-nav]")];
  router = new Router(root.querySelector("#outlet"), routes, (nav) => {
    for (const a of navLinks) a.classList.toggle("active", a.dataset.nav === nav);
  });
  shell = new PageScope();
  if (readsDevices) shell.poll(async (signal) => updateAlarmCount(await api.overview({ signal })), 10_000);
  if (!window.location.hash.startsWith("#/")) window.history.replaceState(null, "", "#/overview");
  await router.show();
}

/** The alarm count in the navigation, coloured by the most severe open alarm. */
function updateAlarmCount(overview) {
  const badge = root.querySelector("[data-alarm-count]");
  if (!badge) return;
  const counts = overview.alarms_open || {};
  const total = Object.values(counts).reduce((a, b) => a + b, 0);
  badge.hidden = total === 0;
  badge.textContent = total > 99 ? "99+" : String(total);
  badge.dataset.severity = ["critical", "major", "minor", "warning", "info"].find((s) => counts[s]) ?? "info";
}

async function boot() {
  takeTokenFromFragment();
  startClock();
  window.addEventListener("tiangong:unauthorized", () => {
    // While the sign-in form checks a token it handles the refusal itself.
    if (router) showSignIn("Your token is no longer accepted (expired or revoked). Sign in again.", true);
  });
  if (!getToken()) {
    showSignIn();
    return;
  }
  try {
    await start();
  } catch (error) {
    if (error instanceof ApiError && error.status === 401) {
      clearToken();
      showSignIn("That token was not accepted. It may have expired or been revoked.", true);
    } else {
      showSignIn(`Could not reach the platform: ${describeError(error)}`, true);
    }
  }
}

boot();
