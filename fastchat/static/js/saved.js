// What the tab keeps in localStorage across reloads: the session, the DM partners, the last room.

const SESSION_KEY = 'fastchat.session';

const dmPartnersKey = (userId) => `fastchat.dms.${userId}`;
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

/** The user's DM partners as a Map(userId -> {id, username}); an unreadable list is dropped. */
export function loadDmPartners(userId) {
  const partners = new Map();
  try {
    for (const partner of JSON.parse(localStorage.getItem(dmPartnersKey(userId))) ?? []) {
      partners.set(partner.id, partner);
    }
  } catch {
    localStorage.removeItem(dmPartnersKey(userId));
  }
  return partners;
}

export function saveDmPartners(userId, partners) {
  localStorage.setItem(dmPartnersKey(userId), JSON.stringify([...partners.values()]));
}

/** The id of the room the user last opened (null when none). */
export const lastRoom = (userId) => localStorage.getItem(lastRoomKey(userId));

export function rememberRoom(userId, roomId) {
  localStorage.setItem(lastRoomKey(userId), roomId);
}
