// Tiny DOM helpers: element construction and a registry that removes every listener (DOM and model
// alike) and timer it added when the view is cleaned up.

/**
 * h("button", {class: "x", title: "…", "data-action": "undo"}, child, …). Object keys that are
 * element properties (value, checked, …) are set as properties, the rest as attributes.
 * No listeners here: the view delegates events from its root, so cleanup stays in one place.
 */
export function h(tag, attrs = {}, ...children) {
  const el = document.createElement(tag);
  for (const [key, value] of Object.entries(attrs)) {
    if (value === undefined || value === null || value === false) continue;
    if (key === "class") el.className = value;
    else if (key === "text") el.textContent = value;
    else if (key === "style" && typeof value === "object") Object.assign(el.style, value);
    else if (key in el && typeof value !== "string") el[key] = value;
    else el.setAttribute(key, value === true ? "" : value);
  }
  for (const child of children.flat()) {
    if (child !== null && child !== undefined && child !== false) {
      el.append(child instanceof Node ? child : document.createTextNode(String(child)));
    }
  }
  return el;
}

/** A button that the view's click handler dispatches by its data-action. */
export function actionButton(action, text, title, extra = {}) {
  return h("button", { type: "button", "data-action": action, title, text, ...extra });
}

export class Disposer {
  constructor() {
    this.undo = [];
    this.timers = new Set();
    this.disposed = false; // work that finishes later (a decode, a download) checks this before touching the view
  }

  /** setTimeout, cleared by dispose() if it has not run yet. */
  later(fn, ms) {
    const t = setTimeout(() => { this.timers.delete(t); fn(); }, ms);
    this.timers.add(t);
  }

  /** addEventListener, remembered for dispose(). */
  listen(target, type, fn, options) {
    target.addEventListener(type, fn, options);
    this.undo.push(() => target.removeEventListener(type, fn, options));
  }

  /** model.on, remembered for dispose(). */
  onModel(model, name, fn) {
    model.on(name, fn);
    this.undo.push(() => model.off(name, fn));
  }

  add(fn) {
    this.undo.push(fn);
  }

  dispose() {
    this.disposed = true;
    for (const t of this.timers) clearTimeout(t);
    this.timers.clear();
    for (const fn of this.undo.splice(0).reverse()) {
      try {
        fn();
      } catch (err) {
        console.warn("semdraw: cleanup step failed", err);
      }
    }
  }
}

const NON_TEXT_INPUTS = new Set(["range", "checkbox", "radio", "color", "button", "submit", "reset", "file"]);

/** True for elements a person types text into. */
export function isTextEntry(el) {
  if (!el || !el.tagName) return false;
  const tag = el.tagName.toLowerCase();
  return tag === "textarea" || (tag === "input" && !NON_TEXT_INPUTS.has(el.type)) || Boolean(el.isContentEditable);
}

/** True when a key event belongs to a form field (shortcuts must not fire then). */
export function isTyping(target) {
  return isTextEntry(target) || target?.tagName?.toLowerCase() === "select";
}
