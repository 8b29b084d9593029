"""Full-text search over exactly the messages a user may see.

The query is reduced to words here and each is quoted, so the store's full-text syntax
(FTS5's operators, PostgreSQL's) never sees user input: no query can fail in the database.
"""

from __future__ import annotations

import re
from typing import TYPE_CHECKING, Any

from fastchat import protocol as p
from fastchat.errors import InvalidQuery
from fastchat.protocol import event

if TYPE_CHECKING:
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


def match_expression(words: list[str]) -> str:
    """An FTS5 expression matching messages that contain every word (each one quoted)."""
    return " ".join(f'"{word}"' for word in words)


class Search:
    """``search`` over WebSocket and ``GET /api/chat/search``."""

    def __init__(self, directory: RoomDirectory, hub: Hub, store: Store, history: History):
        self._directory = directory
        self._hub = hub
        self._store = store
        self._history = history

    async def results(self, user: User, cmd: p.Search) -> dict[str, Any]:
        """The ``search_results`` data for ``cmd``, as ``user`` may see it."""
        match = match_expression(query_words(cmd.query, cmd.TYPE))
        if cmd.room_id is not None:
            room_ids = [self._directory.visible(cmd.room_id, user, cmd.TYPE).id]
        else:
            room_ids = [r.id for r in self._directory.by_id.values() if r.visible_to(user)]
        hits = await self._store.search_messages(
            match, room_ids, before_id=cmd.before, limit=cmd.limit
        )
        # The store returns the newest matches in storage order: the last is the oldest.
        next_before = hits[-1].message.id if len(hits) == cmd.limit else None
        hits.sort(key=lambda hit: hit.rank)
        messages = await self._history.from_rows([hit.message for hit in hits])
        return {
            "query": cmd.query,
            "results": [
                {"message": message, "snippet": hit.snippet}
                for message, hit in zip(messages, hits, strict=True)
            ],
            "nextBefore": next_before,
        }

    async def search(self, conn: Connection, user: User, cmd: p.Search) -> None:
        self._hub.send(conn, event("search_results", await self.results(user, cmd)))
