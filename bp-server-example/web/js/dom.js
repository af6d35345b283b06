// Building DOM nodes without HTML strings: text is always text, so nothing the API returns can
// become markup.

/** @typedef {Node | string | null | undefined | false} Child */
/** @typedef {string | number | boolean | null | undefined | ((event: Event) => void)} AttrValue */

/**
 * An element with attributes and children. `on<event>` attributes are listeners; `true` sets a
 * boolean attribute, `false`, `null` and `undefined` leave it out.
 * @template {keyof HTMLElementTagNameMap} K
 * @param {K} tag
 * @param {Record<string, AttrValue>} [attrs]
 * @param {...(Child | Child[])} children
 * @returns {HTMLElementTagNameMap[K]}
 */
export function h(tag, attrs = {}, ...children) {
  const el = document.createElement(tag);
  for (const [name, value] of Object.entries(attrs)) {
    if (typeof value === 'function') {
      el.addEventListener(name.slice(2), value);
    } else if (value === true) {
      el.setAttribute(name, '');
    } else if (value !== false && value !== null && value !== undefined) {
      el.setAttribute(name, String(value));
    }
  }
  append(el, children);
  return el;
}

/**
 * Appends children (nested arrays flattened, empty ones skipped).
 * @param {Element} el
 * @param {(Child | Child[])[]} children
 */
export function append(el, children) {
  for (const child of children.flat()) {
    if (child === null || child === undefined || child === false) continue;
    el.append(child);
  }
}

/**
 * Replaces everything inside `el`.
 * @param {Element} el
 * @param {...(Child | Child[])} children
 */
export function replace(el, ...children) {
  el.replaceChildren();
  append(el, children);
}

/**
 * Highlights an element briefly (a CSS animation), e.g. a balance that just changed.
 * @param {Element} el
 */
export function flash(el) {
  el.classList.remove('flash');
  // Reading a layout property restarts the animation when it was already running.
  void (/** @type {HTMLElement} */ (el)).offsetWidth;
  el.classList.add('flash');
}

/**
 * The element with this id; a missing one is a bug in the page.
 * @param {string} id
 * @returns {HTMLElement}
 */
export function byId(id) {
  const el = document.getElementById(id);
  if (!el) throw new Error(`the page has no #${id}`);
  return el;
}
