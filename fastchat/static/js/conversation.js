// One conversation (a room or a DM thread): its messages keyed by id, or by clientId
// while only the optimistic copy exists. No DOM, no network.
import { byDisplayOrder } from './format.js';

export const roomKey = (roomId) => `room:${roomId}`;
export const dmKey = (userId) => `dm:${userId}`;

export class Conversation {
  /** `key` is "room:<roomId>" or "dm:<userId>". */
  constructor(key) {
    const [kind, id] = key.split(/:(.*)/s);
    this.key = key;
    this.kind = kind;
    this.id = id;
    this.messages = new Map();
    this.hasMore = true; // older messages exist on the server
    this.loaded = false; // the first page of history has arrived
    this.loadingOlder = false;
    this.unread = 0;
    this.mentions = 0; // unread messages that mention the user (or the room)
    this.mentionIds = new Set(); // the messages counted in `mentions`
    this.lastReadSeq = 0; // the user's read marker: every seq up to it is read
    this.dividerSeq = null; // "new messages" go after this seq (set when opened with unread)
    this.peerReadSeq = null; // in a DM: the other user has read up to this seq
    this.readers = new Map(); // in a room: userId -> the seq that member has read up to
  }

  /** Messages in display order: stored ones by seq, then pending ones as sent. */
  sorted() {
    return [...this.messages.values()].sort(byDisplayOrder);
  }

  /** Lowest and highest stored seq ({min: Infinity, max: 0} when none). */
  seqBounds() {
    let min = Infinity;
    let max = 0;
    for (const m of this.messages.values()) {
      if (m.seq == null) continue;
      if (m.seq < min) min = m.seq;
      if (m.seq > max) max = m.seq;
    }
    return { min, max };
  }

  /** Insert or update a message, replacing the optimistic copy that has its clientId. */
  upsert(msg) {
    if (msg.id && msg.clientId) this.messages.delete(`c:${msg.clientId}`);
    const key = msg.id || `c:${msg.clientId}`;
    const old = this.messages.get(key);
    this.messages.set(key, old ? { ...old, ...msg } : msg);
  }
}
