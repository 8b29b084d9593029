"""Issue 15's costs per message: resolving mentions, and fanning a reaction out to a room.

A plain message pays only the ``"@" in content`` guard; a message with ``@`` pays the
regex and one user look-up per distinct name (from memory once a name has been seen). A
reaction is one small event published to the room, like any other.
"""

from __future__ import annotations

import asyncio
from pathlib import Path

import orjson
import pytest

from bench.support import CONTENT, ROOM_ID, USER_ID, make_members
from fastchat.auth import TokenService
from fastchat.chat.mentions import resolve, resolve_from_memory
from fastchat.chat.rooms import Room
from fastchat.chat.users import Users
from fastchat.clock import utc_now_iso
from fastchat.config import StorageConfig, WebSocketConfig
from fastchat.fanout.hub import Hub
from fastchat.metrics import Metrics
from fastchat.protocol import event
from fastchat.storage import ops
from fastchat.storage.sqlite import SqliteStore, WriteBehind

MENTIONING = "@alice_wonder and @bob_builder, has anyone tried the new release yet?"


@pytest.fixture
def users(loop: asyncio.AbstractEventLoop, tmp_path: Path) -> Users:
    config = StorageConfig(path=tmp_path / "chat.db")
    store = SqliteStore(config)
    store.open()
    writer = WriteBehind(config, loop)
    writer.start()
    for name in ("alice_wonder", "bob_builder"):
        loop.run_until_complete(
            writer.execute(
                ops.insert_user(
                    id=name, username=name, email=None, password_hash="x", created_at=utc_now_iso()
                )
            )
        )
    loop.run_until_complete(writer.close(5))
    return Users(store, TokenService("b" * 32, 3600))


async def _hub() -> Hub:
    return Hub(WebSocketConfig(compression="off"), Metrics())


def _room(hub: Hub) -> Room:
    return Room(ROOM_ID, "General", None, False, None, set(), hub.open_room(ROOM_ID))


@pytest.mark.benchmark(group="mentions")
def test_plain_message_guard(benchmark) -> None:
    assert benchmark(lambda: "@" in CONTENT) is False


@pytest.mark.benchmark(group="mentions")
def test_resolve_two_mentions(benchmark, loop: asyncio.AbstractEventLoop, users: Users) -> None:
    room = _room(loop.run_until_complete(_hub()))

    def resolve_now() -> tuple[list[str], bool]:
        # Driven as Sessions._run drives a handler: SQLite reads never suspend.
        try:
            resolve(MENTIONING, room, users).send(None)
        except StopIteration as done:
            return done.value
        raise AssertionError("resolve suspended")

    assert benchmark(resolve_now) == (["alice_wonder", "bob_builder"], False)


@pytest.mark.benchmark(group="mentions")
def test_resolve_from_memory_a_name_nobody_has(
    benchmark, loop: asyncio.AbstractEventLoop, users: Users
) -> None:
    # The load generator's "@<scheduled ns>:" once it was looked up: the synchronous path.
    room = _room(loop.run_until_complete(_hub()))
    content = "@1764630000123456789:3:12 " + "x" * 74
    assert loop.run_until_complete(resolve(content, room, users)) == ([], False)
    assert benchmark(resolve_from_memory, content, room, users) == ([], False)


@pytest.mark.benchmark(group="reaction-fanout-1000")
def test_reaction_added_to_1000_members(benchmark, loop: asyncio.AbstractEventLoop) -> None:
    hub = loop.run_until_complete(_hub())
    room = hub.open_room(ROOM_ID)
    for conn in make_members(hub, Metrics()):
        hub.enter(room, conn)
    data = {"messageId": "m", "roomId": ROOM_ID, "emoji": "👍", "userId": USER_ID, "username": "a"}

    def react() -> None:
        hub.publish(room, event("reaction_added", data))
        hub.flush()
        while room.writing:
            loop.run_until_complete(asyncio.sleep(0))

    benchmark(react)
    assert orjson.loads(event("reaction_added", data))["data"]["emoji"] == "👍"
