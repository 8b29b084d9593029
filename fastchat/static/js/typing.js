// Typing indicators: what this user tells the room, and what the others are doing.

const SEND_EVERY_MS = 2000;
const IDLE_MS = 3000;
const EXPIRE_MS = 6000;

/**
 * Outgoing: typing_start at most once per 2 s while typing, typing_stop after 3 s idle
 * or when stop() is called (on send, on leaving the room).
 */
export class TypingSender {
  constructor(send) {
    this.send = send;
    this.roomId = null;
    this.sentAt = 0;
    this.idleTimer = null;
  }

  /** The user typed in `roomId`. */
  note(roomId) {
    const now = Date.now();
    if (this.roomId !== roomId) this.stop();
    if (now - this.sentAt >= SEND_EVERY_MS && this.send('typing_start', { roomId })) {
      this.sentAt = now;
      this.roomId = roomId;
    }
    clearTimeout(this.idleTimer);
    this.idleTimer = setTimeout(() => this.stop(), IDLE_MS);
  }

  /** Tell the room we stopped, if we said we had started. */
  stop() {
    clearTimeout(this.idleTimer);
    if (!this.roomId) return;
    this.send('typing_stop', { roomId: this.roomId });
    this.roomId = null;
    this.sentAt = 0;
  }
}

/**
 * Incoming: who is typing in each room. An entry expires 6 s after its last news;
 * `onChange(roomId)` is called whenever a room's set changes.
 */
export class TypingBoard {
  constructor(onChange) {
    this.onChange = onChange;
    this.rooms = new Map(); // roomId -> Map(userId -> {username, timer})
  }

  set(roomId, userId, username) {
    let users = this.rooms.get(roomId);
    if (!users) {
      users = new Map();
      this.rooms.set(roomId, users);
    }
    clearTimeout(users.get(userId)?.timer);
    const timer = setTimeout(() => this.clear(roomId, userId), EXPIRE_MS);
    users.set(userId, { username, timer });
    this.onChange(roomId);
  }

  clear(roomId, userId) {
    const entry = this.rooms.get(roomId)?.get(userId);
    if (!entry) return;
    clearTimeout(entry.timer);
    this.rooms.get(roomId).delete(userId);
    this.onChange(roomId);
  }

  forgetRoom(roomId) {
    for (const entry of this.rooms.get(roomId)?.values() ?? []) clearTimeout(entry.timer);
    this.rooms.delete(roomId);
  }

  /** Usernames typing in `roomId`, in the order they started. */
  names(roomId) {
    return [...(this.rooms.get(roomId)?.values() ?? [])].map((entry) => entry.username);
  }
}
