// What the tab keeps in localStorage across reloads: the session and the last room. (The DM
// conversations come from the server, so that every browser sees the same list.)

const SESSION_KEY = 'fastchat.session';

const lastRoomKey = (userId) => `fastchat.room.${userId}`;

/** The saved {token, user}, or null when there is none (or it is unreadable). */
export function loadSession() {
  try {
    const saved = JSON.parse(localStorage.getItem(SESSION_KEY));
    return saved?.token && saved?.user ? saved : null;
  } catch {
    return null;
  }
}

export function saveSession(session) {
  localStorage.setItem(SESSION_KEY, JSON.stringify(session));
}

export function forgetSession() {
  localStorage.removeItem(SESSION_KEY);
}

/** The id of the room the user last opened (null when none). */
export const lastRoom = (userId) => localStorage.getItem(lastRoomKey(userId));

export function rememberRoom(userId, roomId) {
  localStorage.setItem(lastRoomKey(userId), roomId);
}
