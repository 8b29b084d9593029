// Tiny DOM helpers. Text is only ever inserted as text nodes: no innerHTML anywhere.

/**
 * Create an element. `attrs` keys: `class`, `text`, `dataset` (object), `on` (object of
 * event handlers), anything else is set with setAttribute (booleans add/remove it).
 */
export function el(tag, attrs = {}, ...children) {
  const node = document.createElement(tag);
  for (const [key, value] of Object.entries(attrs)) {
    if (value === undefined || value === null || value === false) continue;
    if (key === 'class') node.className = value;
    else if (key === 'text') node.textContent = String(value);
    else if (key === 'dataset') Object.assign(node.dataset, value);
    else if (key === 'on') {
      for (const [event, handler] of Object.entries(value)) node.addEventListener(event, handler);
    } else node.setAttribute(key, value === true ? '' : String(value));
  }
  for (const child of children) {
    if (child === null || child === undefined || child === false) continue;
    node.append(child instanceof Node ? child : document.createTextNode(String(child)));
  }
  return node;
}

/** Shorthand for document.getElementById. */
export const $ = (id) => document.getElementById(id);

/** Remove every child of `node`. */
export function clear(node) {
  node.replaceChildren();
}
