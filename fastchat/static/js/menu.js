// A small popup menu (user actions), placed at the pointer or under the button that opened it.
import { $, el } from './dom.js';

/** Show a menu titled `title` with `items` = [[label, action], ...] near `event`. */
export function showMenu(title, items, event) {
  const menu = $('context-menu');
  menu.replaceChildren(el('p', { class: 'menu-title', text: title }),
    ...items.map(([label, run]) => el('button', {
      type: 'button', role: 'menuitem', text: label,
      on: { click: () => { closeMenu(); run(); } },
    })));
  menu.hidden = false;
  const box = event.currentTarget?.getBoundingClientRect?.();
  const x = event.clientX || box?.left || 0;
  const y = event.clientY || box?.bottom || 0;
  menu.style.left = `${Math.max(8, Math.min(x, innerWidth - menu.offsetWidth - 8))}px`;
  menu.style.top = `${Math.max(8, Math.min(y, innerHeight - menu.offsetHeight - 8))}px`;
  menu.querySelector('button')?.focus();
}

export function closeMenu() {
  $('context-menu').hidden = true;
}

export const menuOpen = () => !$('context-menu').hidden;

document.addEventListener('click', (event) => {
  if (menuOpen() && !$('context-menu').contains(event.target)
    && !event.target.closest('.more, .author')) closeMenu();
});
