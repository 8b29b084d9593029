// The menu of actions on another user: a DM, and the moderation the current role allows.
import { BAN_DURATIONS, confirmDialog, reasonDialog } from '../dialog.js';
import { moderationActions } from '../format.js';
import { showMenu } from '../menu.js';

const MUTE_OPTIONS = [['Mute 10 minutes', 600], ['Mute 1 hour', 3600], ['Mute 1 day', 86400]];

export class UserMenu {
  /** `onOpenDm(user)` opens a DM, `send(type, fields)` sends a moderation request. */
  constructor(store, { onOpenDm, send }) {
    this.store = store;
    this.onOpenDm = onOpenDm;
    this.send = send;
  }

  /** Show the actions on `user` ({id, username}) near `event`, if there are any. */
  open(user, event) {
    const { store, send } = this;
    const me = store.me;
    const isMe = user.id === me.id;
    const roomId = store.viewRoomId;
    const target = { ...user, role: store.roleOf(user.id) };
    const items = [];
    if (!isMe) items.push(['Send direct message', () => this.onOpenDm(target)]);
    for (const action of moderationActions(me.role, target.role, isMe)) {
      if (action === 'kick' && roomId) {
        items.push(['Kick from room', async () => {
          const answer = await reasonDialog(`Kick ${target.username} from this room?`, 'Kick');
          if (answer) send('kick_user', { roomId, userId: target.id, reason: answer.reason });
        }]);
      } else if (action === 'mute' && roomId) {
        for (const [label, seconds] of MUTE_OPTIONS) {
          items.push([label, () => send('mute_user', { roomId, userId: target.id, durationSeconds: seconds })]);
        }
      } else if (action === 'ban') {
        items.push(['Ban', async () => {
          const answer = await reasonDialog(`Ban ${target.username}?`, 'Ban', BAN_DURATIONS);
          if (answer) send('ban_user', { userId: target.id, ...answer });
        }]);
      } else if (action === 'unban') {
        items.push(['Unban', async () => {
          if (await confirmDialog(`Unban ${target.username}?`, 'Unban')) send('unban_user', { userId: target.id });
        }]);
      } else if (action === 'promote') {
        items.push(['Make moderator', () => send('set_role', { userId: target.id, role: 'moderator' })]);
      } else if (action === 'demote') {
        items.push(['Remove moderator', () => send('set_role', { userId: target.id, role: 'user' })]);
      }
    }
    if (items.length > 0) showMenu(target.username, items, event);
  }
}
