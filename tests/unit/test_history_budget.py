"""The windows' total (``storage.history_cache_total``): what the least recently active rooms
lose, and that what they lost is still read, edited, reacted to and counted right.

The real Chat over a temporary SQLite store, as in test_chat_logic (no sockets).
"""

from __future__ import annotations

from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import pytest

from fastchat.config import StorageConfig
from tests.unit.test_chat_logic import Peer, World, build, close, join, send

CACHE = 10  # per room
TOTAL = 10  # all rooms together


@pytest.fixture
async def world(tmp_path: Path) -> AsyncIterator[World]:
    config = StorageConfig(
        path=tmp_path / "chat.db",
        uploads_dir=tmp_path / "uploads",
        history_cache=CACHE,
        history_cache_total=TOTAL,
    )
    built = await build(config, ("alice", "bob"))
    yield built
    await close(built)


def windows(world: World) -> dict[str, list[str]]:
    """Each loaded room's window, as contents oldest first."""
    return {
        room.id: [m["content"] for m in room.history]
        for room in world.chat.directory.by_id.values()
        if room.history is not None
    }


async def fill(
    world: World, peer: Peer, room: str, count: int, *, start: int = 0, settle: bool = True
) -> None:
    for n in range(start, start + count):
        await world.do(peer, send(f"{room}-{n}", room=room))
    if settle:
        await world.settle()


async def page(world: World, peer: Peer, **request: Any) -> dict[str, Any]:
    await world.do(peer, {"type": "get_room_history", "roomId": "general", **request})
    return peer.events("room_history")[-1]["data"]


async def trimmed_world(world: World) -> tuple[Peer, Peer]:
    """general: 8 stored messages, then random: 8 newer ones, so general loses the most."""
    alice, bob = await world.login("alice"), await world.login("bob")
    for peer in (alice, bob):
        await world.do(peer, join())
        await world.do(peer, join("random"))
    await fill(world, alice, "general", 8)
    await fill(world, alice, "random", 8)
    return alice, bob


async def test_the_least_recently_active_room_loses_its_oldest_messages(world: World):
    await trimmed_world(world)
    held = windows(world)
    assert sum(len(window) for window in held.values()) <= TOTAL
    assert held["random"] == [f"random-{n}" for n in range(8)]  # the active room is whole
    assert 1 <= len(held["general"]) < 8
    assert held["general"] == [f"general-{n}" for n in range(8 - len(held["general"]), 8)]


async def test_a_window_keeps_its_newest_message_and_every_one_not_stored(world: World):
    alice = await world.login("alice")
    await world.do(alice, join())
    await world.do(alice, join("random"))
    await fill(world, alice, "general", 6, settle=False)  # in the writer's queue, not stored
    await fill(world, alice, "random", 30, settle=False)
    assert windows(world)["general"] == [f"general-{n}" for n in range(6)]
    await world.settle()
    await fill(world, alice, "random", 30, start=30)
    held = windows(world)
    assert held["general"] == ["general-5"]
    assert held["random"] == [f"random-{n}" for n in range(60 - len(held["random"]), 60)]


async def test_pages_past_a_trimmed_window_come_from_storage(world: World):
    alice, _ = await trimmed_world(world)
    room = world.chat.directory.by_id["general"]
    assert world.chat.history.cached_page(room, None, None, 50) is None  # not the whole room
    whole = await page(world, alice, limit=50)
    assert [m["content"] for m in whole["messages"]] == [f"general-{n}" for n in range(8)]
    assert whole["hasMore"] is False
    older = await page(world, alice, before=5, limit=3)
    assert [m["seq"] for m in older["messages"]] == [2, 3, 4] and older["hasMore"] is True
    newer = await page(world, alice, after=1, limit=3)
    assert [m["seq"] for m in newer["messages"]] == [2, 3, 4] and newer["hasMore"] is True
    await world.do(alice, join(since=2))  # catch-up after a reconnect
    caught_up = alice.events("room_history")[-1]["data"]["messages"]
    assert [m["seq"] for m in caught_up] == list(range(3, 9))


async def test_edits_reactions_and_deletes_reach_trimmed_messages(world: World):
    alice, bob = await trimmed_world(world)
    first, second, third = (await page(world, alice, limit=50))["messages"][:3]
    assert "general-0" not in windows(world)["general"]
    await world.do(alice, {"type": "edit_message", "messageId": first["id"], "content": "fixed"})
    edited = bob.events("message_edited")[-1]["data"]["message"]
    assert (edited["id"], edited["content"], edited["edited"]) == (first["id"], "fixed", True)
    for peer, emoji in ((alice, "👍"), (bob, "👍")):
        await world.do(peer, {"type": "add_reaction", "messageId": second["id"], "emoji": emoji})
    # removed before the adds are stored: the removal sees them
    await world.do(bob, {"type": "remove_reaction", "messageId": second["id"], "emoji": "👍"})
    assert [e["type"] for e in alice.events() if e["type"].startswith("reaction_")] == [
        "reaction_added",
        "reaction_added",
        "reaction_removed",
    ]
    shown = (await page(world, alice, limit=50))["messages"][1]  # before the writes are stored
    assert shown["reactions"] == [{"emoji": "👍", "count": 1, "userIds": ["alice"]}]
    await world.do(alice, {"type": "delete_message", "messageId": third["id"]})
    assert bob.events("message_deleted")[-1]["data"]["messageId"] == third["id"]
    await world.settle()
    stored = (await page(world, alice, limit=50))["messages"]
    assert stored[0]["content"] == "fixed" and stored[0]["edited"] is True
    assert stored[1]["reactions"] == [{"emoji": "👍", "count": 1, "userIds": ["alice"]}]
    assert stored[2]["deleted"] is True and stored[2]["content"] == ""
    assert world.chat.history._changed == {}  # every change stored: nothing held for it


async def test_unread_counts_reach_past_a_trimmed_window(world: World):
    await trimmed_world(world)
    bob = await world.login("bob")  # a second tab: its rooms carry the unread state
    world.hub.flush()
    rooms = {r["id"]: r for r in bob.events("authenticated")[0]["data"]["rooms"]}
    assert rooms["general"]["unread"] == 8 and rooms["random"]["unread"] == 8
    assert rooms["general"]["lastMessage"]["content"] == "general-7"
