"""DM peers: who, of the users online here, has a direct conversation with whom.

Presence (``user_status``) goes to the rooms a user is a member of and to the users with a
direct conversation with them. That second set is kept in memory for the users online in
this process: learned from the conversation list read when they log in, and from each
direct message sent or delivered here while they are online, so a status change reads
no storage.
"""

from __future__ import annotations

from collections.abc import Iterable

_NOBODY: frozenset[str] = frozenset()


class DmPeers:
    """Conversation peers of the users online here, and the reverse look-up."""

    __slots__ = ("_peers", "_watchers")

    def __init__(self) -> None:
        # user online here -> the users they have a conversation with
        self._peers: dict[str, set[str]] = {}
        # user -> the users online here who have a conversation with them
        self._watchers: dict[str, set[str]] = {}

    def learn(self, user_id: str, peer_ids: Iterable[str]) -> None:
        """``user_id`` is online here, with conversations with ``peer_ids``."""
        peers = self._peers.setdefault(user_id, set())
        for peer_id in peer_ids:
            if peer_id not in peers:
                peers.add(peer_id)
                self._watchers.setdefault(peer_id, set()).add(user_id)

    def link(self, sender_id: str, recipient_id: str) -> bool:
        """A direct message between two users: record the pair for whichever of them is
        online here. Whether it is new for the sender (other processes may not know it)."""
        sender = self._peers.get(sender_id)
        new = sender is not None and recipient_id not in sender
        for user_id, peer_id in ((sender_id, recipient_id), (recipient_id, sender_id)):
            if user_id in self._peers:
                self.learn(user_id, (peer_id,))
        return new

    def forget(self, user_id: str) -> None:
        """``user_id``'s last connection here closed."""
        for peer_id in self._peers.pop(user_id, ()):
            watchers = self._watchers[peer_id]
            watchers.discard(user_id)
            if not watchers:
                del self._watchers[peer_id]

    def watchers(self, user_id: str) -> Iterable[str]:
        """The users online here who have a conversation with ``user_id``."""
        return self._watchers.get(user_id, _NOBODY)
