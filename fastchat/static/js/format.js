// Pure helpers: no DOM, no network. Easy to reason about and to test.

const GROUP_WINDOW_MS = 5 * 60 * 1000;

/** "Alice is typing…", "Alice and Bob are typing…", "Several people are typing…" or "". */
export function typingText(names) {
  if (names.length === 0) return '';
  if (names.length === 1) return `${names[0]} is typing…`;
  if (names.length === 2) return `${names[0]} and ${names[1]} are typing…`;
  return 'Several people are typing…';
}

/** "Seen by Alice", "Seen by Alice, Bob and Carol", "Seen by Alice, Bob, Carol and 2 others". */
export function seenByText(names) {
  if (names.length === 1) return `Seen by ${names[0]}`;
  if (names.length <= 3) return `Seen by ${names.slice(0, -1).join(', ')} and ${names.at(-1)}`;
  const others = names.length - 3;
  return `Seen by ${names.slice(0, 3).join(', ')} and ${others} ${others === 1 ? 'other' : 'others'}`;
}

/** Local calendar day of an ISO timestamp, as a comparable key. */
export function dayKey(iso) {
  const d = new Date(iso);
  return `${d.getFullYear()}-${d.getMonth()}-${d.getDate()}`;
}

/** "Today", "Yesterday" or the locale's long date. */
export function dayLabel(iso, now = new Date()) {
  const key = dayKey(iso);
  if (key === dayKey(now.toISOString())) return 'Today';
  const yesterday = new Date(now);
  yesterday.setDate(now.getDate() - 1);
  if (key === dayKey(yesterday.toISOString())) return 'Yesterday';
  return new Date(iso).toLocaleDateString(undefined, {
    weekday: 'long', year: 'numeric', month: 'long', day: 'numeric',
  });
}

/** The locale's hour and minute of an ISO timestamp. */
export function timeLabel(iso) {
  return new Date(iso).toLocaleTimeString(undefined, { hour: '2-digit', minute: '2-digit' });
}

/** "last seen just now", "… 5 min ago", "… 3 h ago", or "… on <date>"; "" without a time. */
export function lastSeenText(iso, now = Date.now()) {
  const at = Date.parse(iso);
  if (!Number.isFinite(at)) return '';
  const minutes = Math.floor((now - at) / 60_000);
  if (minutes < 1) return 'last seen just now';
  if (minutes < 60) return `last seen ${minutes} min ago`;
  if (minutes < 24 * 60) return `last seen ${Math.floor(minutes / 60)} h ago`;
  return `last seen on ${new Date(at).toLocaleDateString()}`;
}

/** True when `msg` continues `prev`'s group: same author, same day, within 5 minutes. */
export function sameGroup(prev, msg) {
  if (!prev || prev.userId !== msg.userId || prev.deleted) return false;
  if (dayKey(prev.timestamp) !== dayKey(msg.timestamp)) return false;
  return Date.parse(msg.timestamp) - Date.parse(prev.timestamp) < GROUP_WINDOW_MS;
}

/** Human file size: "512 B", "1.2 KB", "3.4 MB". */
export function fileSize(bytes) {
  if (!Number.isFinite(bytes) || bytes < 0) return '';
  if (bytes < 1024) return `${bytes} B`;
  const units = ['KB', 'MB', 'GB'];
  let value = bytes / 1024;
  let unit = 0;
  while (value >= 1024 && unit < units.length - 1) {
    value /= 1024;
    unit += 1;
  }
  return `${value.toFixed(value < 10 ? 1 : 0)} ${units[unit]}`;
}

/** A server message with each "N bytes" in it written as a human size ("10.0 MB"). */
export function humanBytes(text) {
  return text.replace(/\b(\d+) bytes\b/g, (_, n) => fileSize(Number(n)));
}

/**
 * Sort messages for display: stored ones by seq, then not-yet-stored (pending) ones in
 * the order they were sent.
 */
export function byDisplayOrder(a, b) {
  const as = a.seq ?? Infinity;
  const bs = b.seq ?? Infinity;
  if (as !== bs) return as < bs ? -1 : 1;
  return (a.localOrder ?? 0) - (b.localOrder ?? 0);
}

/** Exponential backoff with jitter: 0.5 s doubling to 30 s, each delay drawn from [d/2, d]. */
export function backoffDelay(attempt, random = Math.random) {
  const ceiling = Math.min(30_000, 500 * 2 ** attempt);
  return Math.round(ceiling / 2 + random() * (ceiling / 2));
}

const RANK = { user: 0, moderator: 1, admin: 2 };

/**
 * Moderation actions the current user may take on a target user.
 * Admin: everything; moderator: kick and mute; nobody acts on an admin unless admin,
 * nobody acts on themselves.
 */
export function moderationActions(myRole, targetRole, isSelf) {
  if (isSelf) return [];
  const mine = RANK[myRole] ?? 0;
  const theirs = RANK[targetRole] ?? 0;
  if (mine === 0 || (theirs === RANK.admin && mine < RANK.admin)) return [];
  const actions = ['kick', 'mute'];
  if (mine === RANK.admin) {
    actions.push('ban', 'unban');
    actions.push(theirs === RANK.moderator ? 'demote' : 'promote');
  }
  return actions;
}

/** Whether the current user may delete a message by `authorId` (own, or moderator and up). */
export function canDelete(me, authorId, authorRole) {
  if (me.id === authorId) return true;
  const mine = RANK[me.role] ?? 0;
  if (mine === 0) return false;
  return (RANK[authorRole] ?? 0) < RANK.admin || mine === RANK.admin;
}
