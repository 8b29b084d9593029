// fastchat browser client: wiring of state, server events and the page.
import * as api from './js/api.js';
import { Connection } from './js/connection.js';
import { Conversation, dmKey, roomKey } from './js/conversation.js';
import { $, el } from './js/dom.js';
import { canDelete, moderationActions, typingText } from './js/format.js';
import { closeMenu, menuOpen, showMenu } from './js/menu.js';
import { MessageList } from './js/messages.js';
import { TypingBoard, TypingSender } from './js/typing.js';
import { closeSidebar, notify, sidebarOpen, toast, updateNotificationButton } from './js/ui.js';

const SESSION_KEY = 'fastchat.session';
const HISTORY_PAGE = 50;

const state = {
  session: null, // {token, user}
  rooms: new Map(), // roomId -> {id, name, description, is_private, member_count}
  joined: new Set(), // rooms this connection has joined (rejoined after a reconnect)
  convs: new Map(), // "room:<id>" | "dm:<userId>" -> conversation
  view: null, // conversation key on screen
  members: new Map(), // roomId -> Map(userId -> member)
  users: new Map(), // userId -> {id, username, avatar_url, role}
  unacked: new Map(), // clientId -> {type, fields, convKey}: resent after a reconnect
  inflight: [], // clientIds sent on this connection and not yet echoed, in send order
  dmPartners: new Map(), // userId -> {id, username}
  replyTo: null,
  editingId: null,
  localOrder: 0,
  authenticatedOnce: false,
};

const createdByMe = new Set(); // names of rooms this tab asked to create: opened on room_created

const list = new MessageList($('messages'));
const mainPane = document.querySelector('.main');
const connection = new Connection({
  url: `${location.protocol === 'https:' ? 'wss' : 'ws'}://${location.host}/ws`,
  onOpen: () => connection.send('authenticate', { token: state.session.token }),
  onMessage: (type, data) => handlers[type]?.(data),
  onState: showConnectionState,
});
const typingSender = new TypingSender((type, fields) => connection.send(type, fields));
const typingBoard = new TypingBoard((roomId) => {
  if (state.view === roomKey(roomId)) renderTyping();
});

// ---------------------------------------------------------------- session and auth

function loadSession() {
  try {
    const saved = JSON.parse(localStorage.getItem(SESSION_KEY));
    return saved?.token && saved?.user ? saved : null;
  } catch {
    return null;
  }
}

function saveSession() {
  localStorage.setItem(SESSION_KEY, JSON.stringify(state.session));
}

function dmStorageKey() {
  return `fastchat.dms.${state.session.user.id}`;
}

function startSession(session) {
  state.session = session;
  saveSession();
  try {
    for (const partner of JSON.parse(localStorage.getItem(dmStorageKey())) ?? []) {
      state.dmPartners.set(partner.id, partner);
    }
  } catch {
    localStorage.removeItem(dmStorageKey());
  }
  $('auth-view').hidden = true;
  $('chat-view').hidden = false;
  $('me').textContent = session.user.username;
  updateNotificationButton();
  renderDmList();
  connection.start();
}

function endSession(message = '') {
  connection.stop();
  localStorage.removeItem(SESSION_KEY);
  state.session = null;
  state.rooms.clear();
  state.joined.clear();
  state.convs.clear();
  state.members.clear();
  state.unacked.clear();
  state.dmPartners.clear();
  state.view = null;
  state.authenticatedOnce = false;
  list.reset();
  $('chat-view').hidden = true;
  $('auth-view').hidden = false;
  showAuthForm('login');
  $('login-form').querySelector('.form-error').textContent = message;
  document.title = 'fastchat';
}

function showAuthForm(which) {
  $('login-form').hidden = which !== 'login';
  $('register-form').hidden = which !== 'register';
  $(which === 'login' ? 'login-username' : 'register-username').focus();
}

async function submitAuth(event, call) {
  event.preventDefault();
  const form = event.currentTarget;
  const error = form.querySelector('.form-error');
  const button = form.querySelector('button[type=submit]');
  error.textContent = '';
  button.disabled = true;
  try {
    const { user, token } = await call();
    form.reset();
    startSession({ token, user });
  } catch (err) {
    error.textContent = err.message;
    if (err.field) form.querySelector(`[name=${err.field}]`)?.focus();
  } finally {
    button.disabled = false;
  }
}

$('login-form').addEventListener('submit', (event) => submitAuth(event, () =>
  api.login($('login-username').value.trim(), $('login-password').value)));
$('register-form').addEventListener('submit', (event) => submitAuth(event, () =>
  api.register($('register-username').value.trim(), $('register-email').value.trim(),
    $('register-password').value)));
$('show-register').addEventListener('click', () => showAuthForm('register'));
$('show-login').addEventListener('click', () => showAuthForm('login'));
$('logout').addEventListener('click', () => endSession());

// ---------------------------------------------------------------- connection state

const STATE_LABELS = { connected: 'Connected', reconnecting: 'Reconnecting…', offline: 'Offline' };

function showConnectionState(value) {
  const status = $('connection-status');
  status.dataset.state = value;
  status.textContent = STATE_LABELS[value];
  updateComposer();
}

// ---------------------------------------------------------------- conversations

function conv(key) {
  let c = state.convs.get(key);
  if (!c) {
    c = new Conversation(key);
    state.convs.set(key, c);
  }
  return c;
}

function findMessage(id) {
  const c = state.convs.get(state.view);
  return c?.messages.get(id) ?? null;
}

function rememberUser(user) {
  if (!user?.id) return;
  state.users.set(user.id, { ...state.users.get(user.id), ...user });
}

function roleOf(userId) {
  return state.users.get(userId)?.role ?? 'user';
}

const viewCtx = {
  get me() { return state.session.user; },
  get token() { return state.session.token; },
  get canReply() { return state.view?.startsWith('room:'); },
  isPending: (m) => Boolean(m.clientId && state.unacked.has(m.clientId) && m.userId === state.session.user.id),
  isEditing: (m) => Boolean(m.id) && m.id === state.editingId,
  findMessage,
  canEdit: (m) => state.view.startsWith('room:') && !m.deleted && m.userId === state.session.user.id
    && m.messageType !== 'image' && m.messageType !== 'file',
  canDelete: (m) => state.view.startsWith('room:') && !m.deleted
    && canDelete(state.session.user, m.userId, roleOf(m.userId)),
  onReply: (m) => setReply(m),
  onEdit: (m) => { state.editingId = m.id; renderMessages(); },
  onCancelEdit: () => { state.editingId = null; renderMessages(); $('message-input').focus(); },
  onSaveEdit: saveEdit,
  onDelete: (m) => {
    if (confirm('Delete this message?')) connection.send('delete_message', { messageId: m.id });
  },
  onAuthor: (m, event) => openUserMenu({ id: m.userId, username: m.username }, event),
  onError: toast,
};

function renderMessages(options) {
  const c = state.convs.get(state.view);
  if (!c) {
    list.reset();
    return;
  }
  list.render(c.sorted(), viewCtx, options);
}

/** After a page of history: render, and fetch another page while the list cannot scroll. */
function renderHistory(before) {
  renderMessages({ forceBottom: !before.max });
  const box = $('messages');
  if (box.scrollHeight <= box.clientHeight + 80) requestOlder();
}

function openConversation(key) {
  if (state.view === key) {
    closeSidebar();
    return;
  }
  typingSender.stop();
  state.view = key;
  state.replyTo = null;
  state.editingId = null;
  const c = conv(key);
  c.unread = 0;
  list.reset();
  renderReplyBar();
  renderTyping();
  if (c.kind === 'room') {
    const room = state.rooms.get(c.id);
    $('current-room-name').textContent = room ? `# ${room.name}` : 'Room';
    $('current-room-description').textContent = room?.description ?? '';
    $('leave-room').hidden = false;
    localStorage.setItem(`fastchat.room.${state.session.user.id}`, c.id);
    joinRoom(c.id);
  } else {
    const partner = state.dmPartners.get(c.id);
    $('current-room-name').textContent = `@ ${partner?.username ?? 'Direct message'}`;
    $('current-room-description').textContent = 'Direct message';
    $('leave-room').hidden = true;
    if (!c.loaded) connection.send('get_private_history', { userId: c.id, limit: HISTORY_PAGE });
  }
  renderMessages({ forceBottom: true });
  renderRoomList();
  renderDmList();
  renderMembers();
  updateComposer();
  updateTitle();
  closeSidebar();
  $('message-input').focus();
}

function joinRoom(roomId) {
  const c = conv(roomKey(roomId));
  const fields = { roomId };
  if (c.loaded) fields.since = c.seqBounds().max;
  connection.send('join_room', fields);
}

function requestOlder() {
  const c = state.convs.get(state.view);
  if (!c || !c.loaded || !c.hasMore || c.loadingOlder) return;
  const { min } = c.seqBounds();
  if (!Number.isFinite(min)) return;
  c.loadingOlder = true;
  if (c.kind === 'room') {
    connection.send('get_room_history', { roomId: c.id, limit: HISTORY_PAGE, before: min });
  } else {
    connection.send('get_private_history', { userId: c.id, limit: HISTORY_PAGE, before: min });
  }
}

$('messages').addEventListener('scroll', () => {
  if ($('messages').scrollTop < 80) requestOlder();
});

// ---------------------------------------------------------------- server events

function normalizeRoomMessage(m) {
  rememberUser({ id: m.userId, username: m.username, avatar_url: m.avatar_url });
  return { ...m, localOrder: 0 };
}

function normalizeDm(m, partnerId) {
  const me = state.session.user;
  const fromMe = m.fromUserId === me.id;
  const partner = state.dmPartners.get(partnerId) ?? state.users.get(partnerId);
  return {
    id: m.id,
    seq: m.seq,
    userId: m.fromUserId,
    username: fromMe ? me.username : partner?.username ?? 'Someone',
    content: m.content,
    timestamp: m.timestamp,
    clientId: m.clientId ?? null,
    messageType: 'text',
    localOrder: 0,
  };
}

function addDmPartner(user) {
  if (state.dmPartners.get(user.id)?.username === user.username) return;
  state.dmPartners.set(user.id, { id: user.id, username: user.username });
  localStorage.setItem(dmStorageKey(), JSON.stringify([...state.dmPartners.values()]));
}

function countUnread(key) {
  if (state.view === key && !document.hidden) return;
  conv(key).unread += 1;
  updateTitle();
}

const handlers = {
  connection_established() {},

  authenticated({ user, rooms }) {
    state.inflight = [];
    state.session.user = { ...state.session.user, ...user };
    saveSession();
    rememberUser(user);
    $('me').textContent = user.username;
    state.rooms.clear();
    for (const room of rooms) state.rooms.set(room.id, room);
    connection.markHealthy();
    const rejoin = state.authenticatedOnce;
    state.authenticatedOnce = true;
    if (rejoin) {
      const toJoin = new Set(state.joined);
      if (state.view?.startsWith('room:')) toJoin.add(state.view.slice(5));
      for (const roomId of toJoin) {
        if (state.rooms.has(roomId)) joinRoom(roomId);
        else leftRoom(roomId);
      }
      if (state.view?.startsWith('dm:')) {
        connection.send('get_private_history', { userId: state.view.slice(3), limit: HISTORY_PAGE });
      }
      for (const [clientId, pending] of state.unacked) {
        if (connection.send(pending.type, pending.fields)) state.inflight.push(clientId);
      }
    } else {
      const saved = localStorage.getItem(`fastchat.room.${user.id}`);
      const first = state.rooms.get(saved) ?? [...state.rooms.values()]
        .find((r) => r.name === 'general') ?? state.rooms.values().next().value;
      if (first) openConversation(roomKey(first.id));
    }
    renderRoomList();
    renderMembers();
  },

  room_joined({ roomId, roomName, members }) {
    state.joined.add(roomId);
    const room = state.rooms.get(roomId);
    if (room) room.name = roomName ?? room.name;
    else state.rooms.set(roomId, { id: roomId, name: roomName, description: '', member_count: members.length });
    const map = new Map();
    for (const m of members) {
      map.set(m.id, m);
      rememberUser(m);
    }
    state.members.set(roomId, map);
    const joined = state.rooms.get(roomId);
    joined.member_count = Math.max(joined.member_count ?? 0, map.size);
    const c = conv(roomKey(roomId));
    if (!c.loaded) connection.send('get_room_history', { roomId, limit: HISTORY_PAGE });
    if (state.view === c.key) {
      $('current-room-name').textContent = `# ${roomName}`;
      renderMembers();
    }
    renderRoomList();
  },

  room_left({ roomId }) {
    leftRoom(roomId);
  },

  user_joined({ user, roomId }) {
    rememberUser(user);
    const members = state.members.get(roomId);
    members?.set(user.id, { ...state.users.get(user.id), ...user, status: 'online' });
    const room = state.rooms.get(roomId);
    if (room && members && members.size > (room.member_count ?? 0)) {
      room.member_count = members.size;
      renderRoomList();
    }
    if (state.view === roomKey(roomId)) renderMembers();
  },

  user_left({ user, roomId }) {
    state.members.get(roomId)?.delete(user.id);
    typingBoard.clear(roomId, user.id);
    if (state.view === roomKey(roomId)) renderMembers();
  },

  user_status({ userId, status }) {
    for (const map of state.members.values()) {
      const member = map.get(userId);
      if (member) member.status = status;
    }
    renderMembers();
    renderDmList();
  },

  new_message({ message }) {
    const msg = normalizeRoomMessage(message);
    settled(msg.clientId);
    const key = roomKey(msg.roomId);
    const c = conv(key);
    const isNew = !c.messages.has(msg.id);
    c.upsert(msg);
    typingBoard.clear(msg.roomId, msg.userId);
    if (isNew && msg.userId !== state.session.user.id) countUnread(key);
    if (state.view === key) renderMessages({ forceBottom: msg.userId === state.session.user.id });
    else renderRoomList();
  },

  message_ack({ clientId, messageId, seq, timestamp }) {
    settled(clientId);
    const pending = state.unacked.get(clientId);
    state.unacked.delete(clientId);
    if (!pending) return;
    const c = conv(pending.convKey);
    const optimistic = c.messages.get(`c:${clientId}`);
    if (optimistic) {
      c.messages.delete(`c:${clientId}`);
      if (!c.messages.has(messageId)) c.upsert({ ...optimistic, id: messageId, seq, timestamp });
    }
    if (state.view === pending.convKey) renderMessages();
  },

  room_history({ roomId, messages, hasMore }) {
    const c = conv(roomKey(roomId));
    const before = c.seqBounds();
    for (const m of messages) c.upsert(normalizeRoomMessage(m));
    const olderPage = !c.loaded || messages.some((m) => m.seq < before.min);
    if (olderPage) {
      c.hasMore = hasMore;
    } else if (hasMore && messages.length > 0) {
      // A catch-up after a reconnect that did not fit in one page: fetch the rest.
      connection.send('get_room_history', { roomId, limit: 200, after: c.seqBounds().max });
    }
    c.loaded = true;
    c.loadingOlder = false;
    if (state.view === c.key) renderHistory(before);
  },

  user_typing({ userId, username, roomId, typing }) {
    if (userId === state.session.user.id) return;
    if (typing) typingBoard.set(roomId, userId, username);
    else typingBoard.clear(roomId, userId);
  },

  private_message(data) {
    const { from } = data;
    rememberUser(from);
    addDmPartner(from);
    const key = dmKey(from.id);
    const c = conv(key);
    const isNew = !c.messages.has(data.id);
    c.upsert(normalizeDm({ ...data, fromUserId: from.id }, from.id));
    if (isNew) {
      countUnread(key);
      notify(from.username, data.content);
    }
    if (state.view === key) renderMessages();
    renderDmList();
  },

  private_message_sent(data) {
    settled(data.clientId);
    const key = dmKey(data.targetUserId);
    const c = conv(key);
    if (data.clientId) {
      state.unacked.delete(data.clientId);
      c.messages.delete(`c:${data.clientId}`);
    }
    c.upsert(normalizeDm({ ...data, fromUserId: state.session.user.id }, data.targetUserId));
    if (!state.dmPartners.has(data.targetUserId)) {
      const user = state.users.get(data.targetUserId);
      if (user) addDmPartner(user);
    }
    if (state.view === key) renderMessages({ forceBottom: true });
    renderDmList();
  },

  private_history({ userId, messages, hasMore }) {
    const c = conv(dmKey(userId));
    const before = c.seqBounds();
    for (const m of messages) c.upsert(normalizeDm(m, userId));
    if (!c.loaded || messages.some((m) => m.seq < before.min)) c.hasMore = hasMore;
    c.loaded = true;
    c.loadingOlder = false;
    if (state.view === c.key) renderHistory(before);
  },

  message_edited({ message }) {
    const c = conv(roomKey(message.roomId));
    if (!c.messages.has(message.id)) return;
    c.upsert(normalizeRoomMessage({ ...message, edited: true }));
    if (state.view === c.key) renderMessages();
  },

  message_deleted({ messageId, roomId }) {
    const c = conv(roomKey(roomId));
    const msg = c.messages.get(messageId);
    if (!msg) return;
    c.messages.set(messageId, { ...msg, content: '', deleted: true, attachment: null });
    if (state.editingId === messageId) state.editingId = null;
    if (state.replyTo?.id === messageId) setReply(null);
    if (state.view === c.key) renderMessages();
  },

  room_created({ room }) {
    state.rooms.set(room.id, room);
    renderRoomList();
    if (createdByMe.delete(room.name)) openConversation(roomKey(room.id));
  },

  room_invited({ room }) {
    state.rooms.set(room.id, room);
    renderRoomList();
    toast(`You were invited to ${room.name}`);
  },

  kicked({ roomId, reason }) {
    const name = state.rooms.get(roomId)?.name ?? 'a room';
    toast(`You were removed from ${name}${reason ? `: ${reason}` : ''}`);
    leftRoom(roomId);
  },

  muted({ roomId, until }) {
    const name = state.rooms.get(roomId)?.name ?? 'this room';
    toast(`You are muted in ${name} until ${new Date(until).toLocaleString()}`);
  },

  banned({ reason, until }) {
    const when = until ? ` until ${new Date(until).toLocaleString()}` : '';
    endSession(`You are banned${when}${reason ? `: ${reason}` : ''}.`);
  },

  role_changed({ userId, role }) {
    rememberUser({ id: userId, role });
    for (const map of state.members.values()) {
      const member = map.get(userId);
      if (member) member.role = role;
    }
    if (userId === state.session.user.id) {
      state.session.user.role = role;
      saveSession();
      toast(`Your role is now ${role}`);
      // user_joined carries no role: fetch the members' roles afresh for the new powers.
      if (state.view?.startsWith('room:')) joinRoom(state.view.slice(5));
    }
    renderMembers();
    renderMessages();
  },

  pong() {},

  error({ message, code, type }) {
    if ((type === 'send_message' || type === 'private_message') && REFUSED.has(code)) {
      refuseOldestInflight(type);
    }
    if (code === 'invalid_token') {
      endSession('Your session has expired. Please sign in again.');
      return;
    }
    if (code === 'banned') {
      endSession(message);
      return;
    }
    toast(message || 'Something went wrong');
  },
};

// Codes for which resending the same message cannot succeed.
const REFUSED = new Set(['validation', 'forbidden', 'not_member', 'not_found', 'muted', 'rate_limited', 'overloaded']);

function settled(clientId) {
  const at = clientId ? state.inflight.indexOf(clientId) : -1;
  if (at >= 0) state.inflight.splice(at, 1);
}

/**
 * The server answers a connection's requests in order, so an error for a send belongs to
 * the oldest send of that type still in flight: drop its pending copy and give the text back.
 */
function refuseOldestInflight(type) {
  const clientId = state.inflight.find((id) => state.unacked.get(id)?.type === type);
  if (!clientId) return;
  settled(clientId);
  const pending = state.unacked.get(clientId);
  state.unacked.delete(clientId);
  const c = state.convs.get(pending.convKey);
  c?.messages.delete(`c:${clientId}`);
  const input = $('message-input');
  if (state.view === pending.convKey) {
    if (!input.value.trim() && !pending.fields.fileId) {
      input.value = pending.fields.content;
      autosize();
    }
    renderMessages();
  }
}

function leftRoom(roomId) {
  state.joined.delete(roomId);
  state.members.delete(roomId);
  typingBoard.forgetRoom(roomId);
  const key = roomKey(roomId);
  state.convs.delete(key);
  for (const [clientId, pending] of state.unacked) {
    if (pending.convKey === key) state.unacked.delete(clientId);
  }
  const room = state.rooms.get(roomId);
  if (room?.is_private) state.rooms.delete(roomId);
  if (state.view === key) {
    state.view = null;
    list.reset();
    $('current-room-name').textContent = 'Select a room';
    $('current-room-description').textContent = '';
    $('leave-room').hidden = true;
    renderMembers();
    renderTyping();
    updateComposer();
  }
  renderRoomList();
}

// ---------------------------------------------------------------- sidebar

function badge(count) {
  return count > 0
    ? el('span', { class: 'badge', text: count > 99 ? '99+' : count, 'aria-label': `${count} unread` })
    : null;
}

function renderRoomList() {
  const rooms = [...state.rooms.values()].sort((a, b) => a.name.localeCompare(b.name));
  $('room-list').replaceChildren(...rooms.map((room) => {
    const key = roomKey(room.id);
    const active = state.view === key;
    return el('li', {},
      el('button', {
        type: 'button',
        class: `room${active ? ' active' : ''}${state.joined.has(room.id) ? ' joined' : ''}`,
        dataset: { roomId: room.id },
        'aria-current': active ? 'true' : null,
        title: room.description || room.name,
        on: { click: () => openConversation(key) },
      },
      el('span', { class: 'room-name', text: `# ${room.name}` }),
      room.is_private ? el('span', { class: 'private-tag', text: 'private' }) : null,
      el('span', { class: 'count', text: room.member_count ?? '', 'aria-label': `${room.member_count} members` }),
      badge(state.convs.get(key)?.unread ?? 0)));
  }));
}

function renderMembers() {
  const target = $('member-list');
  const roomId = state.view?.startsWith('room:') ? state.view.slice(5) : null;
  $('members-panel').hidden = !roomId;
  const members = roomId ? [...(state.members.get(roomId)?.values() ?? [])] : [];
  members.sort((a, b) => (a.status === b.status ? a.username.localeCompare(b.username)
    : a.status === 'online' ? -1 : 1));
  target.replaceChildren(...members.map((member) => {
    const online = member.status !== 'offline';
    const isMe = member.id === state.session.user.id;
    const role = state.users.get(member.id)?.role ?? member.role;
    const row = el('li', { class: 'member', dataset: { userId: member.id } },
      el('span', { class: `presence ${online ? 'online' : 'offline'}`, 'aria-label': online ? 'online' : 'offline', role: 'img' }),
      el('button', {
        type: 'button', class: 'member-name link', text: member.username + (isMe ? ' (you)' : ''),
        disabled: isMe,
        on: { click: () => openDm(member) },
      }),
      role && role !== 'user' ? el('span', { class: `role ${role}`, text: role }) : null,
      isMe ? null : el('button', {
        type: 'button', class: 'icon more', text: '⋯', 'aria-label': `Actions for ${member.username}`,
        'aria-haspopup': 'menu', on: { click: (event) => openUserMenu(member, event) },
      }));
    row.addEventListener('contextmenu', (event) => {
      if (isMe) return;
      event.preventDefault();
      openUserMenu(member, event);
    });
    return row;
  }));
}

function renderDmList() {
  const partners = [...state.dmPartners.values()].sort((a, b) => a.username.localeCompare(b.username));
  $('dm-empty').hidden = partners.length > 0;
  $('dm-list').replaceChildren(...partners.map((p) => {
    const key = dmKey(p.id);
    const active = state.view === key;
    return el('li', {},
      el('button', {
        type: 'button', class: `dm${active ? ' active' : ''}`, dataset: { userId: p.id },
        'aria-current': active ? 'true' : null,
        on: { click: () => openConversation(key) },
      },
      el('span', { class: 'dm-name', text: `@ ${p.username}` }),
      badge(state.convs.get(key)?.unread ?? 0)));
  }));
}

function openDm(user) {
  if (user.id === state.session.user.id) return;
  addDmPartner(user);
  renderDmList();
  openConversation(dmKey(user.id));
}

function updateTitle() {
  let total = 0;
  for (const c of state.convs.values()) total += c.unread;
  document.title = total > 0 ? `(${total}) fastchat` : 'fastchat';
  renderRoomList();
  renderDmList();
}

document.addEventListener('visibilitychange', () => {
  if (document.hidden || !state.view) return;
  const c = state.convs.get(state.view);
  if (c?.unread) {
    c.unread = 0;
    updateTitle();
  }
});

$('create-room-form').addEventListener('submit', (event) => {
  event.preventDefault();
  const name = $('room-name').value.trim();
  if (!name) return;
  const description = $('room-description').value.trim();
  const fields = { name, isPrivate: $('room-private').checked };
  if (description) fields.description = description;
  if (connection.send('create_room', fields)) {
    createdByMe.add(name);
    event.currentTarget.reset();
    $('create-room').open = false;
  } else toast('Not connected');
});

$('leave-room').addEventListener('click', () => {
  const roomId = state.view?.startsWith('room:') ? state.view.slice(5) : null;
  if (roomId) connection.send('leave_room', { roomId });
});

// ---------------------------------------------------------------- typing

function renderTyping() {
  const roomId = state.view?.startsWith('room:') ? state.view.slice(5) : null;
  $('typing-indicator').textContent = roomId ? typingText(typingBoard.names(roomId)) : '';
}

// ---------------------------------------------------------------- composer

function updateComposer() {
  const ready = Boolean(state.view);
  mainPane.classList.toggle('no-view', !ready);
  $('message-input').disabled = !ready;
  $('send-button').disabled = !ready;
  $('attach-button').disabled = !ready || !state.view.startsWith('room:');
}

function optimistic(c, clientId, fields) {
  const me = state.session.user;
  state.localOrder += 1;
  c.upsert({
    id: null, seq: null, clientId, userId: me.id, username: me.username,
    content: fields.content, messageType: fields.messageType ?? 'text',
    replyTo: fields.replyTo ?? null, timestamp: new Date().toISOString(),
    edited: false, localOrder: state.localOrder, attachment: fields.attachment ?? null,
  });
}

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

/** Send a room message or DM with a fresh clientId, showing it as pending until acked. */
function sendToView(content, extra = {}) {
  const c = state.convs.get(state.view);
  if (!c) return;
  const clientId = newClientId();
  let type;
  let fields;
  if (c.kind === 'room') {
    type = 'send_message';
    fields = { roomId: c.id, content, clientId };
    if (extra.messageType) {
      fields.messageType = extra.messageType;
      fields.fileId = extra.fileId;
    }
    if (state.replyTo) fields.replyTo = state.replyTo.id;
  } else {
    type = 'private_message';
    fields = { targetUserId: c.id, content, clientId };
  }
  state.unacked.set(clientId, { type, fields, convKey: c.key });
  optimistic(c, clientId, { ...fields, attachment: extra.attachment });
  if (connection.send(type, fields)) state.inflight.push(clientId);
  setReply(null);
  renderMessages({ forceBottom: true });
}

function submitComposer() {
  const input = $('message-input');
  const content = input.value.trim();
  if (!content || !state.view) return;
  if (content.length > 2000) {
    toast('Messages are limited to 2000 characters');
    return;
  }
  typingSender.stop();
  sendToView(content);
  input.value = '';
  autosize();
}

function autosize() {
  const input = $('message-input');
  input.style.height = 'auto';
  input.style.height = `${Math.min(input.scrollHeight, 160)}px`;
}

$('composer').addEventListener('submit', (event) => {
  event.preventDefault();
  submitComposer();
});

$('message-input').addEventListener('keydown', (event) => {
  if (event.key === 'Enter' && !event.shiftKey && !event.isComposing) {
    event.preventDefault();
    submitComposer();
  } else if (event.key === 'Escape' && state.replyTo) {
    event.preventDefault();
    setReply(null);
  }
});

$('message-input').addEventListener('input', () => {
  autosize();
  const roomId = state.view?.startsWith('room:') ? state.view.slice(5) : null;
  if (roomId && $('message-input').value.trim()) typingSender.note(roomId);
  else typingSender.stop();
});

function saveEdit(msg, text) {
  const content = text.trim();
  state.editingId = null;
  if (content && content !== msg.content) {
    connection.send('edit_message', { messageId: msg.id, content });
    conv(state.view).upsert({ ...msg, content, edited: true });
  }
  renderMessages();
  $('message-input').focus();
}

function setReply(msg) {
  state.replyTo = msg;
  renderReplyBar();
  if (msg) $('message-input').focus();
}

function renderReplyBar() {
  const bar = $('reply-bar');
  bar.hidden = !state.replyTo;
  bar.querySelector('.reply-label').replaceChildren(...(state.replyTo
    ? ['Replying to ', el('strong', { text: state.replyTo.username }), ': ',
      el('span', { class: 'reply-snippet', text: state.replyTo.content.slice(0, 120) })]
    : []));
}

$('cancel-reply').addEventListener('click', () => setReply(null));

// ---------------------------------------------------------------- files

async function sendFile(file) {
  if (!state.view?.startsWith('room:')) {
    toast('Files can be sent in rooms');
    return;
  }
  const status = $('upload-status');
  const progress = $('upload-progress');
  status.hidden = false;
  status.querySelector('.upload-name').textContent = `Uploading ${file.name}`;
  progress.value = 0;
  const view = state.view;
  try {
    const uploaded = await api.upload(file, state.session.token, (p) => { progress.value = p; });
    if (state.view !== view) return;
    const messageType = (uploaded.contentType || file.type).startsWith('image/') ? 'image' : 'file';
    sendToView(uploaded.name || file.name, { messageType, fileId: uploaded.id, attachment: { ...uploaded, url: null } });
  } catch (err) {
    toast(`Upload failed: ${err.message}`);
  } finally {
    status.hidden = true;
  }
}

$('attach-button').addEventListener('click', () => $('file-input').click());
$('file-input').addEventListener('change', (event) => {
  for (const file of event.target.files) sendFile(file);
  event.target.value = '';
});

mainPane.addEventListener('dragover', (event) => {
  if (!event.dataTransfer?.types.includes('Files')) return;
  event.preventDefault();
  $('drop-hint').hidden = false;
});
mainPane.addEventListener('dragleave', (event) => {
  if (!mainPane.contains(event.relatedTarget)) $('drop-hint').hidden = true;
});
mainPane.addEventListener('drop', (event) => {
  event.preventDefault();
  $('drop-hint').hidden = true;
  for (const file of event.dataTransfer?.files ?? []) sendFile(file);
});

// ---------------------------------------------------------------- user menu and moderation

const MUTE_OPTIONS = [['Mute 10 minutes', 600], ['Mute 1 hour', 3600], ['Mute 1 day', 86400]];

function openUserMenu(user, event) {
  const me = state.session.user;
  const isMe = user.id === me.id;
  const roomId = state.view?.startsWith('room:') ? state.view.slice(5) : null;
  const target = { ...user, role: roleOf(user.id) };
  const items = [];
  if (!isMe) items.push(['Send direct message', () => openDm(target)]);
  for (const action of moderationActions(me.role, target.role, isMe)) {
    if (action === 'kick' && roomId) {
      items.push(['Kick from room', () => {
        const reason = prompt(`Kick ${target.username}? Reason (optional):`);
        if (reason !== null) connection.send('kick_user', { roomId, userId: target.id, reason: reason.trim() || undefined });
      }]);
    } else if (action === 'mute' && roomId) {
      for (const [label, seconds] of MUTE_OPTIONS) {
        items.push([label, () => connection.send('mute_user', { roomId, userId: target.id, durationSeconds: seconds })]);
      }
    } else if (action === 'ban') {
      items.push(['Ban', () => {
        const reason = prompt(`Ban ${target.username}? Reason (optional):`);
        if (reason !== null) connection.send('ban_user', { userId: target.id, reason: reason.trim() || undefined });
      }]);
    } else if (action === 'promote') {
      items.push(['Make moderator', () => connection.send('set_role', { userId: target.id, role: 'moderator' })]);
    } else if (action === 'demote') {
      items.push(['Remove moderator', () => connection.send('set_role', { userId: target.id, role: 'user' })]);
    }
  }
  if (items.length > 0) showMenu(target.username, items, event);
}

document.addEventListener('keydown', (event) => {
  if (event.key !== 'Escape') return;
  if (menuOpen()) closeMenu();
  else if (sidebarOpen()) closeSidebar();
});

// ---------------------------------------------------------------- start

const saved = loadSession();
if (saved) startSession(saved);
else {
  $('auth-view').hidden = false;
  showAuthForm('login');
}
