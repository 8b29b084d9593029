// Page-level bits: the toast line, the mobile sidebar drawer, browser notifications.
import { $ } from './dom.js';

const TOAST_MS = 5000;
let toastTimer = null;

/** Show a short status line for a few seconds (announced by screen readers). */
export function toast(text) {
  const box = $('toast');
  box.textContent = text;
  box.hidden = false;
  clearTimeout(toastTimer);
  toastTimer = setTimeout(() => { box.hidden = true; }, TOAST_MS);
}

export function closeSidebar() {
  document.body.classList.remove('sidebar-open');
  $('menu-button').setAttribute('aria-expanded', 'false');
  $('scrim').hidden = true;
}

export const sidebarOpen = () => document.body.classList.contains('sidebar-open');

$('menu-button').addEventListener('click', () => {
  const open = document.body.classList.toggle('sidebar-open');
  $('menu-button').setAttribute('aria-expanded', String(open));
  $('scrim').hidden = !open;
});
$('scrim').addEventListener('click', closeSidebar);

/** Show the "Enable notifications" button only while the choice is still open. */
export function updateNotificationButton() {
  $('enable-notifications').hidden = !('Notification' in window) || Notification.permission !== 'default';
}

$('enable-notifications').addEventListener('click', async () => {
  await Notification.requestPermission();
  updateNotificationButton();
});

/**
 * A browser notification when permission was granted: only while the page is hidden, unless
 * `evenIfVisible` (a mention in a conversation that is not on screen). A click on it focuses
 * the page and runs `onClick` (open the conversation).
 */
export function notify(title, body, { evenIfVisible = false, onClick = null } = {}) {
  if ((!document.hidden && !evenIfVisible) || !('Notification' in window) || Notification.permission !== 'granted') return;
  const note = new Notification(title, { body, tag: title });
  note.addEventListener('click', () => {
    window.focus();
    note.close();
    onClick?.();
  });
}
