"""The user cache's look-ups by name (what mention resolution asks for every "@word")."""

from __future__ import annotations

import pytest

from fastchat.chat import users as users_module
from fastchat.chat.users import Users
from fastchat.storage.base import UserRow


class NamesOnlyStore:
    """A store answering ``user_by_name`` from a dict, counting the reads it is asked for."""

    def __init__(self) -> None:
        self.rows: dict[str, UserRow] = {}
        self.reads = 0

    async def user_by_name(self, username: str) -> UserRow | None:
        self.reads += 1
        return self.rows.get(username.lower())


def row(name: str) -> UserRow:
    return UserRow(f"id-{name}", name, None, "x", None, "user", None, None, None, None)


async def test_a_name_nobody_has_is_read_once_then_answered_from_memory():
    store = NamesOnlyStore()
    users = Users(store, tokens=None)  # type: ignore[arg-type]
    for _ in range(50):
        assert await users.by_name("1764630000123456789") is None
    assert store.reads == 1


async def test_a_found_user_is_kept_and_a_new_account_is_found_once_the_miss_expires(
    monkeypatch: pytest.MonkeyPatch,
):
    store = NamesOnlyStore()
    users = Users(store, tokens=None)  # type: ignore[arg-type]
    clock = [1000.0]
    monkeypatch.setattr(users_module.time, "monotonic", lambda: clock[0])
    assert await users.by_name("Bob") is None
    store.rows["bob"] = row("bob")  # registered after the miss
    assert await users.by_name("bob") is None  # still the remembered miss
    clock[0] += users_module.NO_SUCH_NAME_SECONDS + 1
    found = await users.by_name("BOB")
    assert found is not None and found.id == "id-bob"
    reads = store.reads
    assert (await users.by_name("bob")) is found and store.reads == reads


async def test_by_name_in_memory_answers_only_what_by_name_would_without_a_read():
    store = NamesOnlyStore()
    store.rows["bob"] = row("bob")
    users = Users(store, tokens=None)  # type: ignore[arg-type]
    assert users.by_name_in_memory("bob") == (False, None)
    assert users.by_name_in_memory("nobody") == (False, None)
    found = await users.by_name("Bob")
    assert await users.by_name("nobody") is None
    assert users.by_name_in_memory("BOB") == (True, found)
    assert users.by_name_in_memory("nobody") == (True, None)
    assert store.reads == 2
