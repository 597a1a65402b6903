// Small DOM helpers of the page. Text always goes in as text nodes, never as HTML:
// message bodies and names come from other users.

/**
 * Makes an element: `h('li', {class: 'msg', dataset: {seq: 3}}, 'text', child)`.
 * Props: `class`, `dataset`, `on` ({event: handler}), `hidden`, anything else as an
 * attribute (null/false leave it out).
 */
export function h(tag, props = {}, ...children) {
  const el = document.createElement(tag);
  for (const [key, value] of Object.entries(props)) {
    if (value == null || value === false) continue;
    if (key === 'class') el.className = value;
    else if (key === 'dataset') Object.assign(el.dataset, value);
    else if (key === 'on') for (const [type, fn] of Object.entries(value)) el.addEventListener(type, fn);
    else if (key === 'hidden') el.hidden = true;
    else el.setAttribute(key, value === true ? '' : String(value));
  }
  el.append(...children.flat().filter((c) => c != null && c !== false));
  return el;
}

/** The element with this id (the page's fixed skeleton). */
export const byId = (id) => document.getElementById(id);

/** HH:MM of a timestamp in ms. */
export function clock(ms) {
  return new Date(ms).toLocaleTimeString([], {hour: '2-digit', minute: '2-digit'});
}

/** The text of a message body: `{text}` as sent by this page, else its JSON. */
export function bodyText(body) {
  return typeof body?.text === 'string' ? body.text : JSON.stringify(body);
}

/** Calls `fn` once, `ms` after the last of a burst of calls. */
export function debounce(fn, ms) {
  let timer = null;
  return (...args) => {
    clearTimeout(timer);
    timer = setTimeout(() => fn(...args), ms);
  };
}
