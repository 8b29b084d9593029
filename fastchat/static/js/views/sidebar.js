// The sidebar: rooms and direct messages with their unread badges, the new-room form, the
// signed-in user and log out; and the tab title's unread count.
import { dmKey, roomKey } from '../conversation.js';
import { $, el } from '../dom.js';
import { toast } from '../ui.js';

function badge(count) {
  return count > 0
    ? el('span', { class: 'badge', text: count > 99 ? '99+' : count, 'aria-label': `${count} unread` })
    : null;
}

function mentionBadge(count) {
  return count > 0
    ? el('span', { class: 'badge mentions', text: `@${count > 99 ? '99+' : count}`, 'aria-label': `${count} mentions` })
    : null;
}

function presenceDot(status) {
  const online = status === 'online';
  return el('span', { class: `presence ${online ? 'online' : 'offline'}`, role: 'img', 'aria-label': online ? 'online' : 'offline' });
}

export class Sidebar {
  /**
   * `onOpen(key)` opens a conversation, `onCreateRoom(fields)` asks for a room (false when
   * not connected), `onLogout()` signs out.
   */
  constructor(store, { onOpen, onCreateRoom, onLogout }) {
    this.store = store;
    this.onOpen = onOpen;
    $('create-room-form').addEventListener('submit', (event) => {
      event.preventDefault();
      const name = $('room-name').value.trim();
      if (!name) return;
      const description = $('room-description').value.trim();
      const fields = { name, isPrivate: $('room-private').checked };
      if (description) fields.description = description;
      if (onCreateRoom(fields)) {
        event.currentTarget.reset();
        $('create-room').open = false;
      } else toast('Not connected');
    });
    $('logout').addEventListener('click', () => onLogout());
  }

  showMe(username) {
    $('me').textContent = username;
  }

  renderRooms() {
    const { store } = this;
    const rooms = [...store.rooms.values()].sort((a, b) => a.name.localeCompare(b.name));
    $('room-list').replaceChildren(...rooms.map((room) => {
      const key = roomKey(room.id);
      const active = store.view === key;
      return el('li', {},
        el('button', {
          type: 'button',
          class: `room${active ? ' active' : ''}${store.joined.has(room.id) ? ' joined' : ''}`,
          dataset: { roomId: room.id },
          'aria-current': active ? 'true' : null,
          title: room.description || room.name,
          on: { click: () => this.onOpen(key) },
        },
        el('span', { class: 'room-name', text: `# ${room.name}` }),
        room.is_private ? el('span', { class: 'private-tag', text: 'private' }) : null,
        el('span', { class: 'count', text: room.member_count ?? '', 'aria-label': `${room.member_count} members` }),
        mentionBadge(store.convs.get(key)?.mentions ?? 0),
        badge(store.convs.get(key)?.unread ?? 0)));
    }));
  }

  renderDms() {
    const { store } = this;
    const partners = store.dmList();
    $('dm-empty').hidden = partners.length > 0;
    $('dm-list').replaceChildren(...partners.map((p) => {
      const key = dmKey(p.id);
      const active = store.view === key;
      return el('li', {},
        el('button', {
          type: 'button', class: `dm${active ? ' active' : ''}`, dataset: { userId: p.id },
          'aria-current': active ? 'true' : null,
          on: { click: () => this.onOpen(key) },
        },
        presenceDot(store.statusOf(p.id)),
        el('span', { class: 'dm-name', text: `@ ${p.username}` }),
        badge(store.convs.get(key)?.unread ?? 0)));
    }));
  }

  /** The unread counts changed: the tab title and both lists. */
  renderUnread() {
    let total = 0;
    for (const c of this.store.convs.values()) total += c.unread;
    document.title = total > 0 ? `(${total}) fastchat` : 'fastchat';
    this.renderRooms();
    this.renderDms();
  }
}
