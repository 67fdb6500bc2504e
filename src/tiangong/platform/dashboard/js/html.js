// Markup building with escaping by default.
//
// Device names, attributes, alarm messages and event data come from users and devices, so
// nothing reaches innerHTML unless it went through `html`, which escapes every interpolated
// value. Only markup this code built itself (a SafeHtml) is inserted as is.

/** Markup that is known to be safe: built by `html` from escaped parts. */
export class SafeHtml {
  constructor(value) {
    this.value = value;
  }

  toString() {
    return this.value;
  }
}

const ENTITIES = { "&": "&amp;", "<": "&lt;", ">": "&gt;", '"': "&quot;", "'": "&#39;", "`": "&#96;" };

/** A value as HTML text (safe in element content and in quoted attribute values). */
export function escapeHtml(value) {
  return String(value).replace(/[&<>"'`]/g, (c) => ENTITIES[c]);
}

function part(value) {
  if (value instanceof SafeHtml) return value.value;
  if (Array.isArray(value)) return value.map(part).join("");
  if (value === null || value === undefined || value === false) return "";
  return escapeHtml(value);
}

/** Tagged template: `html\`<b>${name}</b>\`` escapes `name`; nested `html` results pass through. */
export function html(strings, ...values) {
  let out = strings[0];
  for (let i = 0; i < values.length; i += 1) {
    out += part(values[i]) + strings[i + 1];
  }
  return new SafeHtml(out);
}

/** Replace an element's content; refuses plain strings so that nothing unescaped slips in. */
export function render(element, markup) {
  if (!(markup instanceof SafeHtml)) throw new TypeError("render() takes html`` markup");
  element.innerHTML = markup.value;
}

/** Build one element from markup (its first element child). */
export function fragment(markup) {
  const template = document.createElement("template");
  render(template, markup);
  return template.content.firstElementChild;
}
