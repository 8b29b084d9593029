// fastchat browser client, the wiring: startup, the connection, and the dispatch of each
// server event to its store update (js/store.js) and then to the views (js/views/) it changes.
import * as api from './js/api.js';
import { Connection } from './js/connection.js';
import { dmKey, roomKey } from './js/conversation.js';
import { personDialog } from './js/dialog.js';
import { humanBytes } from './js/format.js';
import { closeMenu, menuOpen } from './js/menu.js';
import { loadSession, saveSession } from './js/saved.js';
import { ChatStore } from './js/store.js';
import { TypingSender } from './js/typing.js';
import { closeSidebar, notify, sidebarOpen, toast, updateNotificationButton } from './js/ui.js';
import { AuthView } from './js/views/auth.js';
import { Composer } from './js/views/composer.js';
import { MemberList } from './js/views/members.js';
import { MessagesView } from './js/views/messages.js';
import { SidePanel } from './js/views/panel.js';
import { Sidebar } from './js/views/sidebar.js';
import { UserMenu } from './js/views/usermenu.js';

const HISTORY_PAGE = 50;
const CATCH_UP_PAGE = 200;
const RENEW_AHEAD_MS = 60_000; // refresh the access token this long before it expires
const RENEW_RETRY_MS = 10_000; // after a failed refresh that was not a refusal
// At most one mark_read per this long while messages stream in (a busy room must not
// spend the connection's rate limit on read markers).
const MARK_READ_EVERY_MS = 1500;

const store = new ChatStore((roomId) => {
  if (store.isOnScreen(roomKey(roomId))) messages.renderTyping();
});
const connection = new Connection({
  url: `${location.protocol === 'https:' ? 'wss' : 'ws'}://${location.host}/ws`,
  onOpen: () => connection.send('authenticate', { token: store.session.token }),
  onMessage: (type, data) => handlers[type]?.(data),
  onState: (value) => {
    messages.showConnectionState(value);
    composer.update();
  },
});
const send = (type, fields) => connection.send(type, fields);
const typingSender = new TypingSender(send);

const auth = new AuthView({ login: api.login, register: api.register, onSignedIn: startSession });
const sidebar = new Sidebar(store, {
  onOpen: openConversation,
  onCreateRoom: (fields) => {
    if (!send('create_room', fields)) return false;
    store.createdByMe.add(fields.name);
    return true;
  },
  onLogout: () => endSession('', { logout: true }),
});
const userMenu = new UserMenu(store, { onOpenDm: openDm, send });
const members = new MemberList(store, {
  onOpenDm: openDm,
  onUserMenu: (user, event) => userMenu.open(user, event),
});
const messages = new MessagesView(store, {
  onReply: setReply,
  onEdit: (m) => {
    store.editingId = m.id;
    messages.render();
  },
  onCancelEdit: () => {
    store.editingId = null;
    messages.render();
    composer.focus();
  },
  onSaveEdit: (msg, text) => {
    const content = store.saveEdit(msg, text);
    if (content !== null) send('edit_message', { messageId: msg.id, content });
    messages.render();
    composer.focus();
  },
  onDelete: (m) => send('delete_message', { messageId: m.id }),
  onAuthor: (user, event) => userMenu.open(user, event),
  onNearTop: requestOlder,
  onLeave: () => {
    const roomId = store.viewRoomId;
    if (roomId) send('leave_room', { roomId });
  },
  onInvite: inviteToRoom,
  onReact: (m, emoji, add) => send(add ? 'add_reaction' : 'remove_reaction', { messageId: m.id, emoji }),
  onOpenThread: (m) => openThread(m),
});
const panel = new SidePanel(store, Object.create(messages.ctx, {
  canReply: { value: false },
  dividerSeq: { value: null },
  readers: { value: null },
}), {
  onSearch: (query) => {
    store.search = { query, nextBefore: null };
    if (send('search', { query })) panel.showSearching(query);
    else toast('Not connected');
    closeSidebar();
  },
  onMore: () => {
    const { query, nextBefore } = store.search ?? {};
    if (nextBefore) send('search', { query, before: nextBefore });
  },
  onJump: jumpTo,
  onThreadReply: (content) => {
    const { thread } = store;
    if (!thread) return;
    send('send_message', { roomId: thread.roomId, content, replyTo: thread.id });
  },
});
const composer = new Composer(store, {
  onSubmit: (content) => {
    typingSender.stop();
    sendToView(content);
  },
  onTyping: (roomId) => {
    if (roomId) typingSender.note(roomId);
    else typingSender.stop();
  },
  onCancelReply: () => setReply(null),
  onFiles: (files) => {
    for (const file of files) sendFile(file);
  },
});

// ---------------------------------------------------------------- session

async function startSession(session) {
  store.start(session);
  auth.showSignedIn();
  sidebar.showMe(session.user.username);
  updateNotificationButton();
  sidebar.renderDms();
  if (api.tokenExpiry(session.token) - Date.now() < RENEW_AHEAD_MS) await renewToken();
  else scheduleRenewal();
  if (store.session) connection.start();
}

function endSession(message = '', { logout = false } = {}) {
  clearTimeout(renewTimer);
  if (logout && store.session) api.logout(store.session.token).catch(() => {});
  panel.close();
  connection.stop();
  store.end();
  messages.reset();
  auth.showSignedOut(message);
}

// ---------------------------------------------------------------- keeping the token fresh

let renewTimer = null;

function scheduleRenewal(delay = null) {
  clearTimeout(renewTimer);
  const due = delay ?? api.tokenExpiry(store.session.token) - Date.now() - RENEW_AHEAD_MS;
  renewTimer = setTimeout(renewToken, Math.max(due, 1000));
}

/** Trade the refresh token for a new pair ahead of expiry; a live socket is renewed in place. */
async function renewToken() {
  const session = store.session;
  if (!session?.refreshToken) {
    endSession('Your session has expired. Please sign in again.');
    return;
  }
  try {
    const fresh = await api.refresh(session.refreshToken);
    if (store.session !== session) return; // signed out meanwhile
    session.token = fresh.token;
    session.refreshToken = fresh.refreshToken;
    saveSession(session);
    send('authenticate', { token: fresh.token });
    scheduleRenewal();
  } catch (error) {
    if (store.session !== session) return;
    if (error.status === 401 || error.status === 403) endSession(error.message);
    else scheduleRenewal(RENEW_RETRY_MS); // the server is unreachable: try again soon
  }
}

// ---------------------------------------------------------------- the user's actions

function openConversation(key) {
  if (store.isOnScreen(key)) {
    closeSidebar();
    return;
  }
  typingSender.stop();
  markRead({ now: true });
  const c = store.open(key);
  messages.reset();
  composer.renderReply();
  messages.renderTyping();
  if (c.kind === 'room') {
    messages.showRoom(store.rooms.get(c.id));
    joinRoom(c.id);
  } else {
    messages.showDm(store.dmPartners.get(c.id));
    if (!c.loaded) send('get_private_history', { userId: c.id, limit: HISTORY_PAGE });
  }
  messages.render({ forceBottom: true });
  members.render();
  composer.update();
  sidebar.renderUnread();
  closeSidebar();
  composer.focus();
}

function openThread(parent) {
  store.openThread(parent);
  panel.showThread();
  send('get_thread', { messageId: parent.id, limit: HISTORY_PAGE });
  closeSidebar();
}

/** A room message (a search result, a mention): open its room and bring it into view. */
function jumpTo(message) {
  store.jump = message.id;
  openConversation(roomKey(message.roomId));
  revealJump();
}

/** Scroll to the message searched for once it is held, paging back through history to it. */
function revealJump() {
  if (!store.jump) return;
  if (messages.reveal(store.jump)) store.jump = null;
  else if (store.current?.loaded && !store.current.hasMore) store.jump = null;
  else requestOlder();
}

function openDm(user) {
  if (user.id === store.me.id) return;
  store.addDmPartner(user);
  sidebar.renderDms();
  openConversation(dmKey(user.id));
}

async function inviteToRoom() {
  const roomId = store.viewRoomId;
  if (!roomId) return;
  const name = store.rooms.get(roomId)?.name ?? 'this room';
  const person = await personDialog(`Invite to ${name}`, 'Invite', store.invitable(roomId));
  if (person) send('invite_to_room', { roomId, userId: person.id });
}

function joinRoom(roomId) {
  send('join_room', store.joinFields(roomId));
}

function requestOlder() {
  const page = store.startOlderPage();
  if (!page) return;
  if (page.kind === 'room') {
    send('get_room_history', { roomId: page.id, limit: HISTORY_PAGE, before: page.before });
  } else {
    send('get_private_history', { userId: page.id, limit: HISTORY_PAGE, before: page.before });
  }
}

/** Send to the conversation on screen; the message shows as pending until acked. */
function sendToView(content, extra) {
  const outgoing = store.compose(content, extra);
  if (!outgoing) return;
  if (send(outgoing.type, outgoing.fields)) store.sent(outgoing.clientId);
  setReply(null);
  messages.render({ forceBottom: true });
}

function setReply(msg) {
  store.replyTo = msg;
  composer.renderReply();
  if (msg) composer.focus();
}

async function sendFile(file) {
  if (!store.view) return;
  const onProgress = composer.showUpload(file.name);
  const { view } = store;
  try {
    const uploaded = await api.upload(file, store.session.token, onProgress);
    if (store.view !== view) return;
    const messageType = (uploaded.contentType || file.type).startsWith('image/') ? 'image' : 'file';
    sendToView(uploaded.name || file.name, { messageType, fileId: uploaded.id, attachment: { ...uploaded, url: null } });
  } catch (err) {
    toast(`Upload failed: ${humanBytes(err.message)}`);
  } finally {
    composer.hideUpload();
  }
}

/** After a page of history: render, and fetch another page while the list cannot scroll. */
function showHistory({ key, before }) {
  if (!store.isOnScreen(key)) return;
  messages.render({ forceBottom: !before.max && !store.jump });
  markRead();
  if (store.jump) revealJump();
  else if (messages.cannotScroll) requestOlder();
}

let markReadTimer = null;
let markReadSentAt = 0;

/**
 * The conversation on screen is being read: move the read marker to its newest message, at
 * once or, when one was sent less than MARK_READ_EVERY_MS ago, then (`now`: at once anyway,
 * before another conversation goes on screen).
 */
function markRead({ now = false } = {}) {
  if (document.hidden) return;
  const wait = markReadSentAt + MARK_READ_EVERY_MS - Date.now();
  if (!now && (markReadTimer || wait > 0)) {
    markReadTimer ??= setTimeout(() => {
      markReadTimer = null;
      markRead();
    }, wait);
    return;
  }
  clearTimeout(markReadTimer);
  markReadTimer = null;
  const fields = store.readUpTo();
  if (fields && send('mark_read', fields)) markReadSentAt = Date.now();
}

function leftRoom(data) {
  if (store.roomLeft(data)) {
    messages.showNone();
    members.render();
    messages.renderTyping();
    composer.update();
  }
  sidebar.renderRooms();
}

// ---------------------------------------------------------------- server events

const handlers = {
  connection_established() {},

  authenticated(data) {
    const reconnect = store.authenticated(data);
    sidebar.showMe(store.me.username);
    connection.markHealthy();
    if (reconnect) {
      for (const roomId of store.roomsToRejoin()) {
        if (store.rooms.has(roomId)) joinRoom(roomId);
        else leftRoom({ roomId });
      }
      if (store.view?.startsWith('dm:')) {
        send('get_private_history', { userId: store.view.slice(3), limit: HISTORY_PAGE });
      }
      for (const [clientId, pending] of store.unacked) {
        if (send(pending.type, pending.fields)) store.sent(clientId);
      }
    } else {
      const first = store.firstRoom();
      if (first) openConversation(roomKey(first.id));
    }
    sidebar.renderRooms();
    members.render();
  },

  room_joined(data) {
    if (store.roomJoined(data)) send('get_room_history', { roomId: data.roomId, limit: HISTORY_PAGE });
    if (store.isOnScreen(roomKey(data.roomId))) {
      messages.setTitle(`# ${data.roomName}`);
      members.render();
    }
    sidebar.renderRooms();
  },

  room_left: leftRoom,

  user_joined(data) {
    if (store.userJoined(data)) sidebar.renderRooms();
    if (store.isOnScreen(roomKey(data.roomId))) members.render();
  },

  user_left(data) {
    store.userLeft(data);
    if (store.isOnScreen(roomKey(data.roomId))) members.render();
  },

  user_status(data) {
    store.userStatus(data);
    members.render();
    sidebar.renderDms();
  },

  new_message(data) {
    const { key, own, unread, mention, threaded } = store.newMessage(data, document.hidden);
    if (threaded) panel.renderThread({ forceBottom: own });
    if (unread) sidebar.renderUnread();
    if (mention) notifyMention(data.message);
    if (store.isOnScreen(key)) {
      messages.render({ forceBottom: own });
      markRead();
    } else sidebar.renderRooms();
  },

  mention(data) {
    if (store.mentioned(data)) {
      sidebar.renderUnread();
      notifyMention(data.message);
    }
  },

  read_marker(data) {
    store.readMarker(data);
    sidebar.renderUnread();
  },

  read_receipt(data) {
    if (store.isOnScreen(store.readReceipt(data))) messages.render();
  },

  reaction_added(data) {
    if (store.isOnScreen(store.reaction(data, true))) messages.render();
    panel.renderThread();
  },

  reaction_removed(data) {
    if (store.isOnScreen(store.reaction(data, false))) messages.render();
    panel.renderThread();
  },

  thread_updated(data) {
    if (store.isOnScreen(store.threadUpdated(data))) messages.render();
    panel.renderThread();
  },

  thread(data) {
    if (store.threadPage(data)) panel.renderThread({ forceBottom: true });
  },

  search_results(data) {
    if (data.query !== store.search?.query) return;
    const more = store.search.nextBefore !== null;
    store.search.nextBefore = data.nextBefore ?? null;
    panel.renderResults(data, more);
  },

  message_ack(data) {
    const key = store.messageAck(data);
    if (store.isOnScreen(key)) messages.render();
  },

  room_history(data) {
    const page = store.roomHistory(data);
    if (page.catchUpAfter !== null) {
      send('get_room_history', { roomId: data.roomId, limit: CATCH_UP_PAGE, after: page.catchUpAfter });
    }
    showHistory(page);
  },

  user_typing(data) {
    store.userTyping(data);
  },

  private_message(data) {
    const { key, isNew, unread } = store.privateMessage(data, document.hidden);
    if (unread) sidebar.renderUnread();
    if (isNew) notify(data.from.username, data.content, { onClick: () => openDm(data.from) });
    if (store.isOnScreen(key)) {
      messages.render();
      markRead();
    }
    sidebar.renderDms();
  },

  private_message_sent(data) {
    const key = store.privateMessageSent(data);
    if (store.isOnScreen(key)) messages.render({ forceBottom: true });
    sidebar.renderDms();
  },

  private_history(data) {
    showHistory(store.privateHistory(data));
  },

  message_edited(data) {
    const key = store.messageEdited(data);
    if (store.isOnScreen(key)) messages.render();
    panel.renderThread();
  },

  message_deleted(data) {
    showDeleted(store.messageDeleted(data));
  },

  private_message_edited(data) {
    if (store.isOnScreen(store.privateMessageEdited(data))) messages.render();
  },

  private_message_deleted(data) {
    showDeleted(store.privateMessageDeleted(data));
  },

  room_created(data) {
    const opened = store.roomCreated(data);
    sidebar.renderRooms();
    if (opened) openConversation(roomKey(data.room.id));
  },

  room_invited(data) {
    store.roomInvited(data);
    sidebar.renderRooms();
    toast(`You were invited to ${data.room.name}`);
  },

  member_added(data) {
    toast(store.memberAdded(data));
  },

  moderation_done(data) {
    toast(store.moderationDone(data));
  },

  kicked(data) {
    const name = store.rooms.get(data.roomId)?.name ?? 'a room';
    toast(`You were removed from ${name}${data.reason ? `: ${data.reason}` : ''}`);
    store.kicked(data);
    leftRoom(data);
  },

  muted({ roomId, until }) {
    const name = store.rooms.get(roomId)?.name ?? 'this room';
    toast(`You are muted in ${name} until ${unixTime(until)}`);
  },

  banned({ reason, until }) {
    const when = until ? ` until ${unixTime(until)}` : '';
    endSession(`You are banned${when}${reason ? `: ${reason}` : ''}.`);
  },

  role_changed(data) {
    if (store.roleChanged(data)) {
      toast(`Your role is now ${data.role}`);
      // user_joined carries no role: fetch the members' roles afresh for the new powers.
      if (store.viewRoomId !== null) joinRoom(store.viewRoomId);
    }
    members.render();
    messages.render();
  },

  pong() {},

  token_renewed() {},

  error(data) {
    const refused = store.error(data);
    if (refused && store.isOnScreen(refused.convKey)) {
      composer.giveBack(refused.fields);
      messages.render();
    }
    if (data.code === 'invalid_token') {
      renewToken(); // signs out only if the refresh token is refused too
      return;
    }
    if (data.code === 'banned') {
      endSession(data.message);
      return;
    }
    toast(data.message || 'Something went wrong');
  },
};

function notifyMention(message) {
  const room = store.rooms.get(message.roomId)?.name ?? 'a room';
  const evenIfVisible = !store.isOnScreen(roomKey(message.roomId));
  notify(`${message.username} mentioned you in #${room}`, message.content, {
    evenIfVisible, onClick: () => jumpTo(message),
  });
}

function showDeleted(deleted) {
  if (!deleted) return;
  if (deleted.replyCleared) composer.renderReply();
  if (store.isOnScreen(deleted.key)) messages.render();
  panel.renderThread();
}

/** A Unix time in seconds (as `muted` and `banned` carry it), in the user's locale. */
function unixTime(seconds) {
  return new Date(seconds * 1000).toLocaleString();
}

// ---------------------------------------------------------------- page and start

document.addEventListener('visibilitychange', () => {
  if (document.hidden) return;
  if (store.markSeen()) sidebar.renderUnread();
  markRead();
});

document.addEventListener('keydown', (event) => {
  if (event.key !== 'Escape') return;
  if (menuOpen()) closeMenu();
  else if (sidebarOpen()) closeSidebar();
});

const saved = loadSession();
if (saved) startSession(saved);
else auth.showSignedOut();
