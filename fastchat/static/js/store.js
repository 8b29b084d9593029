// The client's state, with one update function per server event and the few changes the
// user's own actions make. No DOM and no network: an update changes the state and returns
// what the wiring (app.js) needs to decide what to render and what to send next.
import { Conversation, dmKey, roomKey } from './conversation.js';
import { canDelete } from './format.js';
import * as saved from './saved.js';
import { TypingBoard } from './typing.js';

// The room created with every database (storage/sqlite.py), "General".
const DEFAULT_ROOM_ID = 'general';

const MODERATION_DONE = {
  kick: 'Removed {user} from {room}',
  mute: 'Muted {user} in {room}',
  ban: 'Banned {user}',
  unban: 'Unbanned {user}',
};

// Codes for which resending the same message cannot succeed.
const REFUSED = new Set(['validation', 'forbidden', 'not_member', 'not_found', 'muted', 'rate_limited', 'overloaded']);

/**
 * A fresh clientId in the UUIDv7 layout: 48-bit Unix milliseconds, then random bits. Ids that
 * grow with time land at the end of the server's unique clientId index instead of on a random
 * page of it, which makes storing a message cheaper.
 */
function newClientId() {
  const bytes = crypto.getRandomValues(new Uint8Array(16));
  let ms = Date.now();
  for (let i = 5; i >= 0; i -= 1) {
    bytes[i] = ms % 256;
    ms = Math.floor(ms / 256);
  }
  bytes[6] = (bytes[6] & 0x0f) | 0x70; // version 7
  bytes[8] = (bytes[8] & 0x3f) | 0x80; // RFC 9562 variant
  const hex = Array.from(bytes, (b) => b.toString(16).padStart(2, '0')).join('');
  return `${hex.slice(0, 8)}-${hex.slice(8, 12)}-${hex.slice(12, 16)}-${hex.slice(16, 20)}-${hex.slice(20)}`;
}

export class ChatStore {
  /** `onTyping(roomId)` is called whenever the set of people typing in a room changes. */
  constructor(onTyping) {
    this.session = null; // {token, user}
    this.rooms = new Map(); // roomId -> {id, name, description, is_private, member_count}
    this.joined = new Set(); // rooms this connection has joined (rejoined after a reconnect)
    this.convs = new Map(); // "room:<id>" | "dm:<userId>" -> Conversation
    this.view = null; // conversation key on screen
    this.members = new Map(); // roomId -> Map(userId -> member)
    this.users = new Map(); // userId -> {id, username, avatar_url, role}
    this.unacked = new Map(); // clientId -> {type, fields, convKey}: resent after a reconnect
    this.inflight = []; // clientIds sent on this connection and not yet echoed, in send order
    this.dmPartners = new Map(); // userId -> {id, username, lastAt}: the DM conversations
    this.replyTo = null; // the message the composer replies to
    this.editingId = null; // the message being edited inline
    this.localOrder = 0;
    this.authenticatedOnce = false;
    this.createdByMe = new Set(); // names of rooms this tab asked to create: opened on room_created
    this.typing = new TypingBoard(onTyping);
    this.thread = null; // the thread in the side panel: a Conversation keyed "thread:<parentId>"
    this.search = null; // the search in the side panel: {query, nextBefore}
    this.jump = null; // the id of a message to bring into view once its conversation holds it
  }

  // ------------------------------------------------------------ reads

  get me() {
    return this.session.user;
  }

  /** The id of the room on screen, or null (a DM or nothing). */
  get viewRoomId() {
    return this.view?.startsWith('room:') ? this.view.slice(5) : null;
  }

  /** The conversation on screen (undefined when none). */
  get current() {
    return this.convs.get(this.view);
  }

  /** True when conversation `key` (null: none) is the one on screen. */
  isOnScreen(key) {
    return key !== null && key === this.view;
  }

  /** The conversation for `key`, created empty on first use. */
  conv(key) {
    let c = this.convs.get(key);
    if (!c) {
      c = new Conversation(key);
      this.convs.set(key, c);
    }
    return c;
  }

  findMessage(id) {
    return this.current?.messages.get(id) ?? null;
  }

  /** Every conversation holding message `id` (a room or DM, and the open thread). */
  holders(id) {
    return [...this.convs.values(), this.thread].filter((c) => c?.messages.has(id));
  }

  /** Where a room message (a search result) was said: "in #room". */
  placeOf(message) {
    return `in #${this.rooms.get(message.roomId)?.name ?? 'a room'}`;
  }

  roleOf(userId) {
    return this.users.get(userId)?.role ?? 'user';
  }

  isPending(m) {
    return Boolean(m.clientId && this.unacked.has(m.clientId) && m.userId === this.me.id);
  }

  isEditing(m) {
    return Boolean(m.id) && m.id === this.editingId;
  }

  canEdit(m) {
    return !m.deleted && m.userId === this.me.id && m.messageType !== 'image' && m.messageType !== 'file';
  }

  /** Own messages; in rooms also others' as the role allows (a DM has no moderators). */
  canDelete(m) {
    if (m.deleted) return false;
    if (!this.view.startsWith('room:')) return m.userId === this.me.id;
    return canDelete(this.me, m.userId, this.roleOf(m.userId));
  }

  /** Rooms to join again after a reconnect: those joined before, and the one on screen. */
  roomsToRejoin() {
    const rooms = new Set(this.joined);
    if (this.viewRoomId !== null) rooms.add(this.viewRoomId);
    return rooms;
  }

  /** The room to open after signing in: the last one opened, else the default room, else any. */
  firstRoom() {
    const rooms = [...this.rooms.values()];
    return this.rooms.get(saved.lastRoom(this.me.id)) ?? this.rooms.get(DEFAULT_ROOM_ID)
      ?? rooms.find((r) => r.name.toLowerCase() === DEFAULT_ROOM_ID) ?? rooms[0];
  }

  /** The people the user has seen who are not members of `roomId` yet, by name. */
  invitable(roomId) {
    const members = this.members.get(roomId);
    return [...this.users.values()]
      .filter((u) => u.username && u.id !== this.me.id && !members?.has(u.id))
      .sort((a, b) => a.username.localeCompare(b.username));
  }

  /** A user's name for a notice: known, or "someone". */
  nameOf(userId) {
    return this.users.get(userId)?.username ?? 'someone';
  }

  // ------------------------------------------------------------ the user's own actions

  /** Sign in: remember the session (the conversations come with `authenticated`). */
  start(session) {
    this.session = session;
    saved.saveSession(session);
  }

  /** Sign out: forget the session and what was learned on it. */
  end() {
    saved.forgetSession();
    this.session = null;
    this.rooms.clear();
    this.joined.clear();
    this.convs.clear();
    this.members.clear();
    this.unacked.clear();
    this.dmPartners.clear();
    this.view = null;
    this.search = null;
    this.jump = null;
    this.authenticatedOnce = false;
  }

  /** Put conversation `key` on screen and return it. */
  open(key) {
    this.view = key;
    this.replyTo = null;
    this.editingId = null;
    const c = this.conv(key);
    c.dividerSeq = c.unread > 0 ? c.lastReadSeq : null;
    c.unread = 0;
    c.mentions = 0;
    if (c.kind === 'room') saved.rememberRoom(this.me.id, c.id);
    return c;
  }

  /** The conversation on screen was seen: true when that cleared unread messages. */
  markSeen() {
    const c = this.current;
    if (!c?.unread) return false;
    c.unread = 0;
    c.mentions = 0;
    return true;
  }

  /**
   * The conversation on screen has been read to its newest stored message: the fields of
   * the mark_read to send ({roomId | userId, seq}), or null when the marker is there already.
   */
  readUpTo() {
    const c = this.current;
    if (!c) return null;
    const { max } = c.seqBounds();
    if (max <= c.lastReadSeq) return null;
    c.lastReadSeq = max;
    return { roomId: c.kind === 'room' ? c.id : undefined, userId: c.kind === 'dm' ? c.id : undefined, seq: max };
  }

  /** The fields of a join_room: `since` the last stored seq once history has been loaded. */
  joinFields(roomId) {
    const c = this.conv(roomKey(roomId));
    const fields = { roomId };
    if (c.loaded) fields.since = c.seqBounds().max;
    return fields;
  }

  /**
   * Start loading the page before the oldest message on screen: its {kind, id, before},
   * or null when there is nothing more to load or a page is already on its way.
   */
  startOlderPage() {
    const c = this.current;
    if (!c || !c.loaded || !c.hasMore || c.loadingOlder) return null;
    const { min } = c.seqBounds();
    if (!Number.isFinite(min)) return null;
    c.loadingOlder = true;
    return { kind: c.kind, id: c.id, before: min };
  }

  /**
   * A room message or DM to the conversation on screen, with a fresh clientId: shown as
   * pending until acked. Returns {clientId, type, fields} to send, or null with no conversation.
   */
  compose(content, extra = {}) {
    const c = this.current;
    if (!c) return null;
    const clientId = newClientId();
    let type;
    let fields;
    if (c.kind === 'room') {
      type = 'send_message';
      fields = { roomId: c.id, content, clientId };
    } else {
      type = 'private_message';
      fields = { targetUserId: c.id, content, clientId };
    }
    if (extra.messageType) {
      fields.messageType = extra.messageType;
      fields.fileId = extra.fileId;
    }
    if (this.replyTo) fields.replyTo = this.replyTo.id;
    this.unacked.set(clientId, { type, fields, convKey: c.key });
    this.localOrder += 1;
    c.upsert({
      id: null, seq: null, clientId, userId: this.me.id, username: this.me.username,
      content, messageType: fields.messageType ?? 'text',
      replyTo: fields.replyTo ?? null, timestamp: new Date().toISOString(),
      edited: false, localOrder: this.localOrder, attachment: extra.attachment ?? null,
    });
    return { clientId, type, fields };
  }

  /** The send of `clientId` went out on this connection. */
  sent(clientId) {
    this.inflight.push(clientId);
  }

  /** Finish an inline edit: the new content to send, or null when unchanged or empty. */
  saveEdit(msg, text) {
    const content = text.trim();
    this.editingId = null;
    if (!content || content === msg.content) return null;
    this.conv(this.view).upsert({ ...msg, content, edited: true });
    return content;
  }

  /** Add (or rename) a DM partner; `at` is the time of the newest message with them. */
  addDmPartner(user, at = null) {
    const known = this.dmPartners.get(user.id);
    const lastAt = at && (!known?.lastAt || at > known.lastAt) ? at : known?.lastAt ?? null;
    this.dmPartners.set(user.id, { id: user.id, username: user.username ?? known?.username, lastAt });
  }

  /** The DM partners, newest conversation first (then by name). */
  dmList() {
    return [...this.dmPartners.values()].sort((a, b) => (b.lastAt ?? '').localeCompare(a.lastAt ?? '')
      || a.username.localeCompare(b.username));
  }

  /** A user's presence: 'online', 'offline', or '' when unknown. */
  statusOf(userId) {
    return this.users.get(userId)?.status ?? '';
  }

  // ------------------------------------------------------------ server events

  /** authenticated: true when this is a reconnect (rooms to rejoin, sends to resend). */
  authenticated({ user, rooms, conversations = [] }) {
    this.inflight = [];
    this.session.user = { ...this.session.user, ...user };
    saved.saveSession(this.session);
    this.rememberUser(user);
    this.rooms.clear();
    for (const room of rooms) {
      this.rooms.set(room.id, room);
      this.learnReadState(roomKey(room.id), room);
    }
    for (const dm of conversations) {
      this.rememberUser({ ...dm.user, status: dm.user.online ? 'online' : 'offline' });
      this.addDmPartner(dm.user, dm.lastMessage?.timestamp ?? null);
      this.learnReadState(dmKey(dm.user.id), dm);
    }
    const reconnect = this.authenticatedOnce;
    this.authenticatedOnce = true;
    return reconnect;
  }

  /** room_joined: true when the room's history is still to be fetched. */
  roomJoined({ roomId, roomName, members }) {
    this.joined.add(roomId);
    const room = this.rooms.get(roomId);
    if (room) room.name = roomName ?? room.name;
    else this.rooms.set(roomId, { id: roomId, name: roomName, description: '', member_count: members.length });
    const map = new Map();
    for (const m of members) {
      map.set(m.id, m);
      this.rememberUser(m);
    }
    this.members.set(roomId, map);
    const joined = this.rooms.get(roomId);
    joined.member_count = Math.max(joined.member_count ?? 0, map.size);
    return !this.conv(roomKey(roomId)).loaded;
  }

  /** room_left (and kicked, and a room gone after a reconnect): true when it was on screen. */
  roomLeft({ roomId }) {
    this.joined.delete(roomId);
    this.members.delete(roomId);
    this.typing.forgetRoom(roomId);
    const key = roomKey(roomId);
    this.convs.delete(key);
    for (const [clientId, pending] of this.unacked) {
      if (pending.convKey === key) this.unacked.delete(clientId);
    }
    if (this.view !== key) return false;
    this.view = null;
    return true;
  }

  /** user_joined: true when the room's member count grew. */
  userJoined({ user, roomId }) {
    this.rememberUser(user);
    const members = this.members.get(roomId);
    members?.set(user.id, { ...this.users.get(user.id), ...user, status: 'online' });
    const room = this.rooms.get(roomId);
    if (!room || !members || members.size <= (room.member_count ?? 0)) return false;
    room.member_count = members.size;
    return true;
  }

  /** user_left: they stay listed as a member (membership outlives leaving), typing no more. */
  userLeft({ user, roomId }) {
    this.typing.clear(roomId, user.id);
  }

  userStatus({ userId, status, timestamp }) {
    this.rememberUser({ id: userId, status, last_seen: status === 'offline' ? timestamp : undefined });
    for (const map of this.members.values()) {
      const member = map.get(userId);
      if (member) {
        member.status = status;
        if (status === 'offline') member.last_seen = timestamp;
      }
    }
  }

  /** new_message: its conversation `key`, whether it is `own`, and whether it counted `unread`. */
  newMessage({ message }, pageHidden) {
    const msg = this.roomMessage(message);
    this.settled(msg.clientId);
    const key = roomKey(msg.roomId);
    const c = this.conv(key);
    const isNew = !c.messages.has(msg.id);
    c.upsert(msg);
    const threaded = this.inThread(msg);
    this.typing.clear(msg.roomId, msg.userId);
    const own = msg.userId === this.me.id;
    // A `mention` of it may have come first, and counted it.
    const unread = isNew && !own && !c.mentionIds.has(msg.id) && this.countUnread(key, pageHidden);
    return { key, own, unread, threaded, mention: unread && this.countMention(c, msg) };
  }

  /**
   * mention (a message naming this user, in a room not on screen here): its room's key,
   * or null when it was counted already.
   */
  mentioned({ message }) {
    const key = roomKey(message.roomId);
    const c = this.conv(key);
    if (c.messages.has(message.id) || c.mentionIds.has(message.id) || this.isOnScreen(key)) return null;
    c.unread += 1;
    this.countMention(c, message);
    return key;
  }

  /** read_marker (this user read elsewhere): the conversation's key, its badge cleared as far as read. */
  readMarker({ roomId, userId, seq }) {
    const c = this.conv(roomId ? roomKey(roomId) : dmKey(userId));
    if (seq <= c.lastReadSeq) return c.key;
    c.lastReadSeq = seq;
    c.unread = c.sorted().filter((m) => m.seq > seq && m.userId !== this.me.id).length;
    if (c.unread === 0) c.mentions = 0;
    return c.key;
  }

  /** read_receipt: the key of the conversation (a DM's peer, or a room's member) read further. */
  readReceipt({ roomId, userId, seq }) {
    if (roomId) {
      const c = this.conv(roomKey(roomId));
      if (userId !== this.me.id) c.readers.set(userId, Math.max(c.readers.get(userId) ?? 0, seq));
      return c.key;
    }
    const c = this.conv(dmKey(userId));
    c.peerReadSeq = Math.max(c.peerReadSeq ?? 0, seq);
    return c.key;
  }

  /** reaction_added / reaction_removed: the key of the conversation holding it, or null. */
  reaction({ messageId, emoji, userId }, added) {
    let key = null;
    for (const c of this.holders(messageId)) {
      const msg = c.messages.get(messageId);
      const reactions = (msg.reactions ?? []).map((r) => ({ ...r, userIds: [...r.userIds] }));
      let entry = reactions.find((r) => r.emoji === emoji);
      if (!entry) {
        entry = { emoji, count: 0, userIds: [] };
        reactions.push(entry);
      }
      const had = entry.userIds.includes(userId);
      if (added && !had) entry.userIds.push(userId);
      if (!added && had) entry.userIds.splice(entry.userIds.indexOf(userId), 1);
      entry.count = entry.userIds.length;
      c.messages.set(messageId, { ...msg, reactions: reactions.filter((r) => r.count > 0) });
      key ??= c.key;
    }
    return key;
  }

  /** thread_updated: the key of the room holding the parent, or null. */
  threadUpdated({ messageId, roomId, replyCount }) {
    for (const c of this.holders(messageId)) c.messages.set(messageId, { ...c.messages.get(messageId), replyCount });
    return roomKey(roomId);
  }

  /** Open `parent`'s thread in the side panel (its replies come with `thread`). */
  openThread(parent) {
    this.thread = new Conversation(`thread:${parent.id}`);
    this.thread.roomId = parent.roomId;
    this.thread.upsert({ ...parent, localOrder: 0 });
  }

  closeThread() {
    this.thread = null;
  }

  /** thread: true when it is the page of the open thread. */
  threadPage({ messageId, replies, hasMore }) {
    const t = this.thread;
    if (t?.id !== messageId) return false;
    for (const m of replies) t.upsert(this.roomMessage(m));
    t.hasMore = hasMore;
    t.loaded = true;
    return true;
  }

  /** A message of the open thread's room: true when it is a reply in that thread. */
  inThread(msg) {
    if (!this.thread || msg.replyTo !== this.thread.id) return false;
    this.thread.upsert(msg);
    return true;
  }

  /** message_ack: the key of the conversation whose pending copy became stored, or null. */
  messageAck({ clientId, messageId, seq, timestamp }) {
    this.settled(clientId);
    const pending = this.unacked.get(clientId);
    this.unacked.delete(clientId);
    if (!pending) return null;
    const c = this.conv(pending.convKey);
    const optimistic = c.messages.get(`c:${clientId}`);
    if (optimistic) {
      c.messages.delete(`c:${clientId}`);
      if (!c.messages.has(messageId)) c.upsert({ ...optimistic, id: messageId, seq, timestamp });
    }
    return pending.convKey;
  }

  /**
   * room_history: the conversation `key`, its seq bounds `before` the page, and `catchUpAfter`,
   * the seq to fetch the rest after when a catch-up did not fit in one page (else null).
   */
  roomHistory({ roomId, messages, hasMore }) {
    const c = this.conv(roomKey(roomId));
    const before = c.seqBounds();
    for (const m of messages) c.upsert(this.roomMessage(m));
    let catchUpAfter = null;
    if (!c.loaded || messages.some((m) => m.seq < before.min)) c.hasMore = hasMore;
    else if (hasMore && messages.length > 0) catchUpAfter = c.seqBounds().max;
    c.loaded = true;
    c.loadingOlder = false;
    return { key: c.key, before, catchUpAfter };
  }

  userTyping({ userId, username, roomId, typing }) {
    if (userId === this.me.id) return;
    if (typing) this.typing.set(roomId, userId, username);
    else this.typing.clear(roomId, userId);
  }

  /** private_message: its conversation `key`, whether it `isNew`, and whether it counted `unread`. */
  privateMessage(data, pageHidden) {
    const { from } = data;
    this.rememberUser({ ...from, status: 'online' });
    this.addDmPartner(from, data.timestamp);
    const key = dmKey(from.id);
    const c = this.conv(key);
    const isNew = !c.messages.has(data.id);
    c.upsert(this.directMessage({ ...data, fromUserId: from.id }, from.id));
    return { key, isNew, unread: isNew && this.countUnread(key, pageHidden) };
  }

  /** private_message_sent: the key of its conversation. */
  privateMessageSent(data) {
    this.settled(data.clientId);
    const key = dmKey(data.targetUserId);
    const c = this.conv(key);
    if (data.clientId) {
      this.unacked.delete(data.clientId);
      c.messages.delete(`c:${data.clientId}`);
    }
    c.upsert(this.directMessage({ ...data, fromUserId: this.me.id }, data.targetUserId));
    const user = this.dmPartners.get(data.targetUserId) ?? this.users.get(data.targetUserId);
    if (user) this.addDmPartner(user, data.timestamp);
    return key;
  }

  /** private_history: the conversation `key` and its seq bounds `before` the page. */
  privateHistory({ userId, messages, hasMore }) {
    const c = this.conv(dmKey(userId));
    const before = c.seqBounds();
    for (const m of messages) c.upsert(this.directMessage(m, userId));
    if (!c.loaded || messages.some((m) => m.seq < before.min)) c.hasMore = hasMore;
    c.loaded = true;
    c.loadingOlder = false;
    return { key: c.key, before };
  }

  /** message_edited: the key of its conversation, or null for a message not held here. */
  messageEdited({ message }) {
    const holders = this.holders(message.id);
    for (const c of holders) c.upsert(this.roomMessage({ ...message, edited: true }));
    return holders.length ? roomKey(message.roomId) : null;
  }

  /** private_message_edited: the key of its conversation. */
  privateMessageEdited({ message }) {
    const partnerId = message.fromUserId === this.me.id ? message.toUserId : message.fromUserId;
    const c = this.conv(dmKey(partnerId));
    if (c.messages.has(message.id)) c.upsert(this.directMessage({ ...message, edited: true }, partnerId));
    return c.key;
  }

  /** private_message_deleted: {key, replyCleared}, as message_deleted. */
  privateMessageDeleted({ messageId, fromUserId, toUserId }) {
    const partnerId = fromUserId === this.me.id ? toUserId : fromUserId;
    const deleted = this.messageDeleted({ messageId });
    return deleted && { ...deleted, key: dmKey(partnerId) };
  }

  /**
   * message_deleted: {key, replyCleared} (true when the composer was replying to it),
   * or null for a message not held here.
   */
  messageDeleted({ messageId, roomId }) {
    // A deleted reply leaves the open thread (the server no longer lists it there).
    if (this.thread && this.thread.id !== messageId) this.thread.messages.delete(messageId);
    const holders = this.holders(messageId);
    if (!holders.length) return null;
    for (const c of holders) {
      c.messages.set(messageId, { ...c.messages.get(messageId), content: '', deleted: true, attachment: null, reactions: [] });
    }
    if (this.editingId === messageId) this.editingId = null;
    const replyCleared = this.replyTo?.id === messageId;
    if (replyCleared) this.replyTo = null;
    return { key: roomId ? roomKey(roomId) : null, replyCleared };
  }

  /** kicked: out of a private room, the membership ended with it. */
  kicked({ roomId }) {
    if (this.rooms.get(roomId)?.is_private) this.rooms.delete(roomId);
  }

  /** member_added: the confirmation to show the inviter. */
  memberAdded({ roomId, userId }) {
    return `Invited ${this.nameOf(userId)} to ${this.rooms.get(roomId)?.name ?? 'the room'}`;
  }

  /** moderation_done: the confirmation to show the moderator. */
  moderationDone({ action, userId, roomId }) {
    const text = MODERATION_DONE[action] ?? `Done: ${action} {user}`;
    return text.replace('{user}', this.nameOf(userId))
      .replace('{room}', this.rooms.get(roomId)?.name ?? 'the room');
  }

  /** room_created: true when this tab asked for the room (so opens it). */
  roomCreated({ room }) {
    this.rooms.set(room.id, room);
    return this.createdByMe.delete(room.name);
  }

  roomInvited({ room }) {
    this.rooms.set(room.id, room);
  }

  /** role_changed: true when it is this user's role. */
  roleChanged({ userId, role }) {
    this.rememberUser({ id: userId, role });
    for (const map of this.members.values()) {
      const member = map.get(userId);
      if (member) member.role = role;
    }
    if (userId !== this.me.id) return false;
    this.session.user.role = role;
    saved.saveSession(this.session);
    return true;
  }

  /**
   * error: when it refuses a message send, drop the pending copy of that send and return it
   * ({type, fields, convKey}); null otherwise. The server answers a connection's requests in
   * order, so the error belongs to the oldest send of that type still in flight.
   */
  error({ code, type }) {
    if ((type !== 'send_message' && type !== 'private_message') || !REFUSED.has(code)) return null;
    const clientId = this.inflight.find((id) => this.unacked.get(id)?.type === type);
    if (!clientId) return null;
    this.settled(clientId);
    const pending = this.unacked.get(clientId);
    this.unacked.delete(clientId);
    this.convs.get(pending.convKey)?.messages.delete(`c:${clientId}`);
    return pending;
  }

  // ------------------------------------------------------------ helpers of the updates

  rememberUser(user) {
    if (!user?.id) return;
    this.users.set(user.id, { ...this.users.get(user.id), ...user });
  }

  settled(clientId) {
    const at = clientId ? this.inflight.indexOf(clientId) : -1;
    if (at >= 0) this.inflight.splice(at, 1);
  }

  /** The unread, mentions and read marker of a conversation as `authenticated` lists it. */
  learnReadState(key, { unread, mentions, lastReadSeq }) {
    const c = this.conv(key);
    if (lastReadSeq !== undefined) c.lastReadSeq = Math.max(c.lastReadSeq, lastReadSeq);
    if (this.isOnScreen(key)) return;
    if (unread !== undefined) c.unread = unread;
    if (mentions !== undefined) c.mentions = mentions;
  }

  /** Count `msg` as a mention when it names this user or the room: true when it does. */
  countMention(c, msg) {
    if (!(msg.mentionsRoom || msg.mentions?.includes(this.me.id)) || c.mentionIds.has(msg.id)) return false;
    c.mentionIds.add(msg.id);
    c.mentions += 1;
    return true;
  }

  /** Count a new message as unread unless it is on screen in a visible page. */
  countUnread(key, pageHidden) {
    if (this.view === key && !pageHidden) return false;
    this.conv(key).unread += 1;
    return true;
  }

  roomMessage(m) {
    this.rememberUser({ id: m.userId, username: m.username, avatar_url: m.avatar_url });
    return { ...m, localOrder: 0 };
  }

  directMessage(m, partnerId) {
    const me = this.me;
    const fromMe = m.fromUserId === me.id;
    const partner = this.dmPartners.get(partnerId) ?? this.users.get(partnerId);
    return {
      id: m.id,
      seq: m.seq,
      userId: m.fromUserId,
      username: fromMe ? me.username : partner?.username ?? 'Someone',
      content: m.content,
      timestamp: m.timestamp,
      clientId: m.clientId ?? null,
      messageType: m.messageType ?? 'text',
      attachment: m.attachment ?? null,
      replyTo: m.replyTo ?? null,
      reactions: m.reactions ?? [],
      edited: m.edited ?? false,
      deleted: m.deleted ?? false,
      localOrder: 0,
    };
  }
}
