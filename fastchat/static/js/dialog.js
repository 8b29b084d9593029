// The modal dialog (one <dialog>, filled per question): confirmations, moderation reasons and
// durations, and picking a person. Each question resolves to the answer, or null when cancelled.
import { $, el } from './dom.js';

export const BAN_DURATIONS = [['Permanently', 0], ['1 hour', 3600], ['1 day', 86400], ['1 week', 604800]];

/**
 * Show the dialog with `title`, `fields` (elements inside the form) and a confirm button
 * labelled `confirm`; `read()` turns the form into the answer when confirmed.
 */
function ask(title, fields, confirm, read, { danger = false } = {}) {
  const dialog = $('dialog');
  const form = el('form', { method: 'dialog', class: 'dialog-form' },
    el('h2', { id: 'dialog-title', text: title }),
    ...fields,
    el('div', { class: 'dialog-buttons' },
      el('button', { type: 'button', class: 'secondary', value: 'cancel', text: 'Cancel', on: { click: () => dialog.close('cancel') } }),
      el('button', { type: 'submit', class: danger ? 'primary danger' : 'primary', value: 'ok', text: confirm })));
  dialog.replaceChildren(form);
  return new Promise((resolve) => {
    dialog.addEventListener('close', () => {
      resolve(dialog.returnValue === 'ok' ? read(form) : null);
    }, { once: true });
    dialog.returnValue = '';
    dialog.showModal();
    form.querySelector('input, select, button[type=submit]')?.focus();
  });
}

/** Ask a yes/no question: resolves to true, or null. */
export function confirmDialog(title, confirm, options) {
  return ask(title, [], confirm, () => true, options);
}

/**
 * Ask for a moderation reason (and, with `durations` [[label, seconds]...], a duration):
 * resolves to {reason (undefined when empty), durationSeconds (undefined for 0)}, or null.
 */
export function reasonDialog(title, confirm, durations = null) {
  const fields = [
    el('label', { for: 'dialog-reason', text: 'Reason (optional)' }),
    el('input', { id: 'dialog-reason', name: 'reason', maxlength: 256, autocomplete: 'off' }),
  ];
  if (durations) {
    fields.push(el('label', { for: 'dialog-duration', text: 'Duration' }),
      el('select', { id: 'dialog-duration', name: 'duration' },
        ...durations.map(([label, seconds]) => el('option', { value: seconds, text: label }))));
  }
  return ask(title, fields, confirm, (form) => ({
    reason: form.elements.reason.value.trim() || undefined,
    durationSeconds: durations ? Number(form.elements.duration.value) || undefined : undefined,
  }), { danger: true });
}

/** Pick one of `people` ({id, username}), filtered as the user types: resolves to one, or null. */
export function personDialog(title, confirm, people) {
  const filter = el('input', { id: 'dialog-filter', type: 'search', autocomplete: 'off', 'aria-label': 'Filter people' });
  const list = el('div', { class: 'person-list', role: 'radiogroup', 'aria-label': 'People' });
  const show = () => {
    const wanted = filter.value.trim().toLowerCase();
    const shown = people.filter((p) => p.username.toLowerCase().includes(wanted));
    list.replaceChildren(...(shown.length ? shown.map((p) => el('label', { class: 'check person' },
      el('input', { type: 'radio', name: 'person', value: p.id }), p.username))
      : [el('p', { class: 'muted small', text: 'Nobody to show: people appear here once you have seen them in a room.' })]));
  };
  filter.addEventListener('input', show);
  show();
  return ask(title, [filter, list], confirm, (form) => {
    const id = form.querySelector('input[name=person]:checked')?.value;
    return people.find((p) => p.id === id) ?? null;
  });
}
