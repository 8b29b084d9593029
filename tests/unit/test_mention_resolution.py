"""Mention resolution: which ``@names`` count, from storage or from the user cache alone."""

from __future__ import annotations

from fastchat.chat.mentions import MAX_MENTIONS, _names, resolve, resolve_from_memory
from fastchat.chat.rooms import Room
from fastchat.chat.users import Users
from fastchat.storage.base import UserRow


class NamesStore:
    """A store answering ``user_by_name`` from a dict, counting the reads."""

    def __init__(self, *names: str) -> None:
        self.rows = {
            name: UserRow(f"id-{name}", name, None, "x", None, "user", None, None, None, None)
            for name in names
        }
        self.reads = 0

    async def user_by_name(self, username: str) -> UserRow | None:
        self.reads += 1
        return self.rows.get(username.lower())


def public_room() -> Room:
    return Room("r", "General", None, False, None, set(), None)  # type: ignore[arg-type]


def test_names_are_words_after_an_at_sign_not_inside_addresses():
    assert _names("hi @Bob and @bob, mail carl@example.com x@@dan .@eve -@fay (@gus @room") == (
        ["bob", "gus"],
        True,
    )
    assert _names("@ab is too short, @" + "a" * 40) == (["a" * 32], False)
    many = " ".join(f"@user{k}" for k in range(MAX_MENTIONS + 5))
    assert len(_names(many)[0]) == MAX_MENTIONS


async def test_from_memory_needs_storage_until_every_name_was_looked_up():
    store = NamesStore("bob")
    users = Users(store, tokens=None)  # type: ignore[arg-type]
    room = public_room()
    content = "@1764630000123456789:3:12 ping @bob."
    assert resolve_from_memory(content, room, users) is None
    assert await resolve(content, room, users) == (["id-bob"], False)
    reads = store.reads
    assert resolve_from_memory(content, room, users) == (["id-bob"], False)
    assert resolve_from_memory("@1764630000123456789 only", room, users) == ([], False)
    assert store.reads == reads
