// Devices: every device of the tenant, filtered by site and state, with live values.

import { DeviceTable } from "../device-table.js";
import { html, render } from "../html.js";
import { updateQuery } from "../router.js";

export async function mount(outlet, { query }, scope) {
  render(outlet, html`<div class="page-head"><div><h1>Devices</h1>
      <div class="sub">Connected machines, meters and sensors with their newest values</div></div></div>
    <section class="card" data-device-table></section>`);
  new DeviceTable(outlet.querySelector("[data-device-table]"), scope, {
    query,
    // Filters live in the hash so that back/forward and reloads keep them.
    onChange: (f) => updateQuery({ site: f.site, state: f.state, page: f.page > 1 ? f.page : "", size: f.size !== 25 ? f.size : "", q: f.search }),
  });
}
