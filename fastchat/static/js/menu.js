// A small popup menu (user actions, the emoji picker), placed at the pointer or under the
// button that opened it.
import { $, el } from './dom.js';

// The reactions offered by the picker: single emoji graphemes, which the server accepts.
const REACTION_EMOJI = ['👍', '👎', '😄', '🎉', '😕', '❤️', '🚀', '👀', '😂', '🙏', '🔥', '✅'];

function place(menu, event) {
  menu.hidden = false;
  const box = event.currentTarget?.getBoundingClientRect?.();
  const x = event.clientX || box?.left || 0;
  const y = event.clientY || box?.bottom || 0;
  menu.style.left = `${Math.max(8, Math.min(x, innerWidth - menu.offsetWidth - 8))}px`;
  menu.style.top = `${Math.max(8, Math.min(y, innerHeight - menu.offsetHeight - 8))}px`;
  menu.querySelector('button')?.focus();
}

/** Show a menu titled `title` with `items` = [[label, action], ...] near `event`. */
export function showMenu(title, items, event) {
  const menu = $('context-menu');
  menu.className = 'menu';
  menu.replaceChildren(el('p', { class: 'menu-title', text: title }),
    ...items.map(([label, run]) => el('button', {
      type: 'button', role: 'menuitem', text: label,
      on: { click: () => { closeMenu(); run(); } },
    })));
  place(menu, event);
}

/** Show the emoji picker near `event`; `onPick(emoji)` gets the one chosen. */
export function showEmojiPicker(onPick, event) {
  const menu = $('context-menu');
  menu.className = 'menu emoji-picker';
  menu.replaceChildren(el('p', { class: 'menu-title', text: 'Add a reaction' }),
    el('div', { class: 'emoji-grid' }, ...REACTION_EMOJI.map((emoji) => el('button', {
      type: 'button', role: 'menuitem', class: 'emoji-choice', text: emoji, 'aria-label': `React with ${emoji}`,
      on: { click: () => { closeMenu(); onPick(emoji); } },
    }))));
  place(menu, event);
}

export function closeMenu() {
  $('context-menu').hidden = true;
}

export const menuOpen = () => !$('context-menu').hidden;

document.addEventListener('click', (event) => {
  if (menuOpen() && !$('context-menu').contains(event.target)
    && !event.target.closest('.more, .author, .react')) closeMenu();
});
