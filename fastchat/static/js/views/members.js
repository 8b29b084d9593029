// The members of the room on screen: presence, role, and the way to a DM or the user menu.
import { $, el } from '../dom.js';
import { lastSeenText } from '../format.js';

export class MemberList {
  /** `onOpenDm(user)` opens a DM with a member, `onUserMenu(user, event)` their actions. */
  constructor(store, { onOpenDm, onUserMenu }) {
    this.store = store;
    this.onOpenDm = onOpenDm;
    this.onUserMenu = onUserMenu;
  }

  render() {
    const { store } = this;
    const roomId = store.viewRoomId;
    $('members-panel').hidden = !roomId;
    const members = roomId ? [...(store.members.get(roomId)?.values() ?? [])] : [];
    members.sort((a, b) => (a.status === b.status ? a.username.localeCompare(b.username)
      : a.status === 'online' ? -1 : 1));
    $('member-list').replaceChildren(...members.map((member) => {
      const online = member.status !== 'offline';
      const isMe = member.id === store.me.id;
      const user = store.users.get(member.id);
      const role = user?.role ?? member.role;
      const lastSeen = online ? '' : lastSeenText(member.last_seen ?? user?.last_seen);
      const row = el('li', { class: 'member', dataset: { userId: member.id } },
        el('span', { class: `presence ${online ? 'online' : 'offline'}`, 'aria-label': online ? 'online' : 'offline', role: 'img' }),
        el('button', {
          type: 'button', class: 'member-name link', text: member.username + (isMe ? ' (you)' : ''),
          disabled: isMe,
          on: { click: () => this.onOpenDm(member) },
        }),
        lastSeen ? el('span', { class: 'last-seen', text: lastSeen }) : null,
        role && role !== 'user' ? el('span', { class: `role ${role}`, text: role }) : null,
        isMe ? null : el('button', {
          type: 'button', class: 'icon more', text: '⋯', 'aria-label': `Actions for ${member.username}`,
          'aria-haspopup': 'menu', on: { click: (event) => this.onUserMenu(member, event) },
        }));
      row.addEventListener('contextmenu', (event) => {
        if (isMe) return;
        event.preventDefault();
        this.onUserMenu(member, event);
      });
      return row;
    }));
  }
}
