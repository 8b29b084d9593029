// The conversation on screen: its header (title, description, Leave, connection state),
// the message list, the typing line, and the scroll that asks for older history.
import { confirmDialog } from '../dialog.js';
import { $ } from '../dom.js';
import { typingText } from '../format.js';
import { showEmojiPicker } from '../menu.js';
import { MessageList } from '../messages.js';
import { toast } from '../ui.js';

const STATE_LABELS = { connected: 'Connected', reconnecting: 'Reconnecting…', offline: 'Offline' };
const NEAR_TOP_PX = 80;

export class MessagesView {
  /**
   * `actions`: onReply(msg), onEdit(msg), onCancelEdit(), onSaveEdit(msg, text),
   * onDelete(msg) (confirmed), onAuthor(user, event), onNearTop(), onLeave(), onInvite(),
   * onReact(msg, emoji, add), onOpenThread(msg).
   */
  constructor(store, actions) {
    this.store = store;
    this.box = $('messages');
    this.list = new MessageList(this.box);
    this.ctx = {
      get me() { return store.me; },
      get token() { return store.session.token; },
      get canReply() { return Boolean(store.view); },
      get canReact() { return Boolean(store.view); },
      get dividerSeq() { return store.current?.dividerSeq ?? null; },
      get seenSeq() { return store.current?.peerReadSeq ?? null; },
      get readers() { return store.current?.readers.size ? store.current.readers : null; },
      nameOf: (userId) => store.nameOf(userId),
      isPending: (m) => store.isPending(m),
      isEditing: (m) => store.isEditing(m),
      findMessage: (id) => store.findMessage(id),
      canEdit: (m) => store.canEdit(m),
      canDelete: (m) => store.canDelete(m),
      isMentionOfMe: (name) => name === 'room' || name.toLowerCase() === store.me.username.toLowerCase(),
      onReply: actions.onReply,
      onEdit: actions.onEdit,
      onCancelEdit: actions.onCancelEdit,
      onSaveEdit: actions.onSaveEdit,
      onDelete: async (m) => {
        if (await confirmDialog('Delete this message?', 'Delete', { danger: true })) actions.onDelete(m);
      },
      onAuthor: (m, event) => actions.onAuthor({ id: m.userId, username: m.username }, event),
      onError: toast,
      onReact: actions.onReact,
      onPickReaction: (m, event) => showEmojiPicker((emoji) => actions.onReact(m, emoji, true), event),
      onOpenThread: actions.onOpenThread,
    };
    this.box.addEventListener('scroll', () => {
      if (this.box.scrollTop < NEAR_TOP_PX) actions.onNearTop();
    });
    $('leave-room').addEventListener('click', () => actions.onLeave());
    $('invite-button').addEventListener('click', () => actions.onInvite());
  }

  /** Show the conversation on screen (or nothing); `options.forceBottom` scrolls to the end. */
  render(options) {
    const c = this.store.current;
    if (!c) {
      this.list.reset();
      return;
    }
    this.list.render(c.sorted(), this.ctx, { ...options, loaded: c.loaded });
  }

  /** Scroll message `id` into view and flash it: false when it is not rendered (yet). */
  reveal(id) {
    const node = this.box.querySelector(`.message[data-message-id="${CSS.escape(id)}"]`);
    if (!node) return false;
    node.scrollIntoView({ block: 'center' });
    node.classList.remove('flash');
    node.classList.add('flash');
    this.list.pinned = this.list.nearBottom;
    return true;
  }

  /** Forget the rendered messages (another conversation is coming). */
  reset() {
    this.list.reset();
  }

  /** True while the list is too short to scroll up to older history. */
  get cannotScroll() {
    return this.box.scrollHeight <= this.box.clientHeight + NEAR_TOP_PX;
  }

  showRoom(room) {
    this.showHeader(room ? `# ${room.name}` : 'Room', room?.description ?? '', true);
    $('invite-button').hidden = !room?.is_private;
  }

  showDm(partner) {
    this.showHeader(`@ ${partner?.username ?? 'Direct message'}`, 'Direct message', false);
  }

  /** No conversation on screen. */
  showNone() {
    this.list.reset();
    this.showHeader('Select a room', '', false);
  }

  showHeader(title, description, leavable) {
    this.setTitle(title);
    $('current-room-description').textContent = description;
    $('leave-room').hidden = !leavable;
    $('invite-button').hidden = true;
  }

  setTitle(title) {
    $('current-room-name').textContent = title;
  }

  renderTyping() {
    const roomId = this.store.viewRoomId;
    $('typing-indicator').textContent = roomId ? typingText(this.store.typing.names(roomId)) : '';
  }

  /** The connection's state: connected | reconnecting | offline. */
  showConnectionState(value) {
    const status = $('connection-status');
    status.dataset.state = value;
    status.textContent = STATE_LABELS[value];
  }
}
