"""Mentions: ``@username`` and ``@room`` in a message, resolved to who may see the room."""

from __future__ import annotations

import re
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from fastchat.chat.rooms import Room
    from fastchat.chat.users import Users

# A username is 3-32 of [A-Za-z0-9_.-]; not preceded by a word character (an email address).
_MENTION = re.compile(r"(?<![\w.@-])@([A-Za-z0-9_.\-]{3,32})")
ROOM_MENTION = "room"
MAX_MENTIONS = 20
"""Distinct usernames resolved per message, at most (the rest are plain text)."""


async def resolve(content: str, room: Room, users: Users) -> tuple[list[str], bool]:
    """The ids of the users ``content`` mentions who may see ``room`` (in order, once
    each), and whether it mentions ``@room``. Call only when ``"@" in content``."""
    names: dict[str, None] = {}
    for name in _MENTION.findall(content):
        names.setdefault(name.lower(), None)
    mentions_room = ROOM_MENTION in names
    names.pop(ROOM_MENTION, None)
    user_ids: list[str] = []
    for name in list(names)[:MAX_MENTIONS]:
        user = await users.by_name(name)
        if user is None and name.rstrip(".-") != name:  # "@bob." at the end of a sentence
            user = await users.by_name(name.rstrip(".-"))
        if user is not None and room.visible_to(user) and user.id not in user_ids:
            user_ids.append(user.id)
    return user_ids, mentions_room
