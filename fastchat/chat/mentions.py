"""Mentions: ``@username`` and ``@room`` in a message, resolved to who may see the room."""

from __future__ import annotations

import re
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from fastchat.chat.rooms import Room
    from fastchat.chat.users import User, Users

# A username is 3-32 of [A-Za-z0-9_.-]; not preceded by a word character (an email address).
# The "@" comes first so the engine scans for it: a leading lookbehind is tried at every
# position of the content (6x slower on a 100-character message).
_MENTION = re.compile(r"@(?<![\w.@-]@)([A-Za-z0-9_.\-]{3,32})")
ROOM_MENTION = "room"
MAX_MENTIONS = 20
"""Distinct usernames resolved per message, at most (the rest are plain text)."""

Mentions = tuple[list[str], bool]
"""The ids of the mentioned users who may see the room (in order, once each), and whether
the message mentions ``@room``."""


async def resolve(content: str, room: Room, users: Users) -> Mentions:
    """The mentions of ``content`` in ``room``. Call only when ``"@" in content``."""
    names, mentions_room = _names(content)
    user_ids: list[str] = []
    for name in names:
        user = await users.by_name(name)
        if user is None and name.rstrip(".-") != name:  # "@bob." at the end of a sentence
            user = await users.by_name(name.rstrip(".-"))
        _add(user_ids, user, room)
    return user_ids, mentions_room


def resolve_from_memory(content: str, room: Room, users: Users) -> Mentions | None:
    """:func:`resolve`'s answer when the user cache knows every name (a user, or a name
    nobody has), else None: then only :func:`resolve` can tell. No storage read, no await:
    a message whose names are all known stays on the synchronous send path."""
    names, mentions_room = _names(content)
    user_ids: list[str] = []
    for name in names:
        known, user = users.by_name_in_memory(name)
        if known and user is None and name.rstrip(".-") != name:
            known, user = users.by_name_in_memory(name.rstrip(".-"))
        if not known:
            return None
        _add(user_ids, user, room)
    return user_ids, mentions_room


def _names(content: str) -> tuple[list[str], bool]:
    """The lower-cased names ``content`` mentions (once each, at most MAX_MENTIONS, without
    ``room``), and whether it mentions ``@room``."""
    names: dict[str, None] = {}
    for name in _MENTION.findall(content):
        names.setdefault(name.lower(), None)
    mentions_room = ROOM_MENTION in names
    names.pop(ROOM_MENTION, None)
    return list(names)[:MAX_MENTIONS], mentions_room


def _add(user_ids: list[str], user: User | None, room: Room) -> None:
    if user is not None and room.visible_to(user) and user.id not in user_ids:
        user_ids.append(user.id)
