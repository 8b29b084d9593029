"""Full-text search over exactly the messages a user may see: the rooms they may see and
their own direct messages.

The query is reduced to words here, and the store gets only words (SQLite quotes each in
its FTS5 expression, PostgreSQL reads them with ``plainto_tsquery``), so no full-text syntax
from user input reaches the database: no query can fail there.
"""

from __future__ import annotations

import re
from typing import TYPE_CHECKING, Any

from fastchat import protocol as p
from fastchat.errors import InvalidQuery
from fastchat.protocol import event
from fastchat.storage.base import DirectMessageRow, MessageRow

if TYPE_CHECKING:
    from fastchat.chat.direct import Direct
    from fastchat.chat.history import History
    from fastchat.chat.rooms import RoomDirectory
    from fastchat.chat.users import User
    from fastchat.fanout.hub import Hub
    from fastchat.storage.base import Store
    from fastchat.ws.peer import Peer as Connection

_WORD = re.compile(r"[^\W_]+")
MAX_QUERY_WORDS = 8


def query_words(query: str, request_type: str | None = None) -> list[str]:
    """The words of a query, lower-cased; InvalidQuery when there are none or too many."""
    words = _WORD.findall(query.lower())
    if not words:
        raise InvalidQuery("The query has no words to search for", request_type=request_type)
    if len(words) > MAX_QUERY_WORDS:
        raise InvalidQuery(
            f"The query has too many words (max {MAX_QUERY_WORDS})", request_type=request_type
        )
    return words


class Search:
    """``search`` over WebSocket and ``GET /api/chat/search``."""

    def __init__(
        self,
        directory: RoomDirectory,
        hub: Hub,
        store: Store,
        history: History,
        direct: Direct,
    ):
        self._directory = directory
        self._hub = hub
        self._store = store
        self._history = history
        self._direct = direct

    async def results(self, user: User, cmd: p.Search) -> dict[str, Any]:
        """The ``search_results`` data for ``cmd``, as ``user`` may see it: the rooms they
        may see (or the one asked for) and, unless a room was asked for, their own DMs."""
        words = query_words(cmd.query, cmd.TYPE)
        if cmd.room_id is not None:
            room_ids = [self._directory.visible(cmd.room_id, user, cmd.TYPE).id]
        else:
            room_ids = [r.id for r in self._directory.by_id.values() if r.visible_to(user)]
        hits = await self._store.search_messages(
            words, room_ids, before_id=cmd.before, limit=cmd.limit
        )
        if cmd.room_id is None:
            hits += await self._store.search_direct(
                words, user.id, before_id=cmd.before, limit=cmd.limit
            )
            # Ids grow with time: the newest of both kinds, newest first.
            hits.sort(key=lambda hit: hit.message.id, reverse=True)
            hits = hits[: cmd.limit]
        next_before = hits[-1].message.id if len(hits) == cmd.limit else None
        hits.sort(key=lambda hit: hit.rank)
        rooms = await self._history.from_rows(
            [h.message for h in hits if isinstance(h.message, MessageRow)]
        )
        dms = await self._direct.from_rows(
            [h.message for h in hits if isinstance(h.message, DirectMessageRow)]
        )
        room_messages, direct_messages = iter(rooms), iter(dms)
        return {
            "query": cmd.query,
            "results": [
                {
                    "message": next(
                        room_messages if isinstance(hit.message, MessageRow) else direct_messages
                    ),
                    "snippet": hit.snippet,
                }
                for hit in hits
            ],
            "nextBefore": next_before,
        }

    async def search(self, conn: Connection, user: User, cmd: p.Search) -> None:
        self._hub.send(conn, event("search_results", await self.results(user, cmd)))
