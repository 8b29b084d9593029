"""The chat logic built alone: the real Chat, Hub and LocalBroker over a temporary SQLite
store, with in-memory peers in place of WebSocket connections (no sockets, no server).

The peers implement :class:`fastchat.ws.peer.Peer` and record the frames the hub writes
them; every test reads what a client would have received.
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import orjson
import pytest

from fastchat import protocol as p
from fastchat.auth import TokenService
from fastchat.chat import Chat
from fastchat.clock import utc_now_iso
from fastchat.config import LimitsConfig, StorageConfig, WebSocketConfig
from fastchat.errors import ChatError
from fastchat.fanout.broker import LocalBroker
from fastchat.fanout.hub import Hub, Room
from fastchat.metrics import Metrics
from fastchat.session import Sessions
from fastchat.storage import ops
from fastchat.storage.base import StartupState, Store
from fastchat.storage.sqlite import SqliteStore, WriteBehind
from fastchat.ws.peer import PLAIN

SECRET = "unit-test-secret-unit-test-secret"


class Peer:
    """A connection as the hub sees it, writing into a list instead of a socket."""

    def __init__(self, client: str = "127.0.0.1") -> None:
        self.out: bytes | list[bytes] | None = None
        self.paused = False
        self.closed = False
        self.compress = PLAIN
        self.deflater = None
        self.rooms: list[Room] = []
        self.user_id: str | None = None
        self.client = client
        self.session: object = None
        self.close_code: int | None = None
        self._written = bytearray()

    def deliver(self, blob: bytes) -> None:
        self._written += blob

    def flush(self) -> None:
        out, self.out = self.out, None
        if out is not None:
            self._written += out if type(out) is bytes else b"".join(out)

    def hold(self, blob: bytes) -> None:
        self._written += blob

    def close(self, code: int, reason: str = "", *, slow: bool = False) -> None:
        self.close_code = code
        self.closed = True

    def events(self, kind: str | None = None) -> list[dict[str, Any]]:
        """The events written so far (server frames: unmasked, lengths below 2**16)."""
        found, data, pos = [], bytes(self._written), 0
        while pos < len(data):
            length, pos = data[pos + 1] & 0x7F, pos + 2
            if length == 126:
                length, pos = int.from_bytes(data[pos : pos + 2], "big"), pos + 2
            found.append(orjson.loads(data[pos : pos + length]))
            pos += length
        return [e for e in found if kind is None or e["type"] == kind]


@dataclass
class World:
    chat: Chat
    hub: Hub
    store: SqliteStore
    writer: WriteBehind
    config: StorageConfig

    async def settle(self) -> None:
        """Let the writer commit what is queued (acks follow), then flush the hub."""
        await self.writer.execute(ops.touch_last_seen("nobody", utc_now_iso()))
        self.hub.flush()

    async def login(self, user_id: str) -> Peer:
        peer = Peer()
        user = await self.chat.user(user_id)
        assert user is not None
        self.hub.opened(peer)  # type: ignore[arg-type]
        await self.chat.authenticate(peer, user)  # type: ignore[arg-type]
        return peer

    async def do(self, peer: Peer, command: dict[str, Any]) -> None:
        """Run one authenticated command as the session does, to completion; a refusal
        becomes the ``error`` event it sends."""
        cmd = p.parse(orjson.dumps(command))
        user = await self.chat.user(peer.user_id)  # type: ignore[arg-type]
        try:
            waits = self.chat.handlers[type(cmd)](peer, user, cmd)  # type: ignore[arg-type]
            if waits is not None:
                await waits
        except ChatError as err:
            self.hub.send(peer, p.error_event(err))  # type: ignore[arg-type]
        self.hub.flush()


async def build(config: StorageConfig, users: tuple[str, ...] = ()) -> World:
    store = SqliteStore(config)
    startup = store.open()
    writer = WriteBehind(config, asyncio.get_running_loop())
    writer.start()
    for user_id in users:
        await writer.execute(
            ops.insert_user(
                id=user_id,
                username=f"name-{user_id}",
                email=f"{user_id}@example.com",
                password_hash="x",
                created_at=utc_now_iso(),
                role="admin" if user_id == "admin" else "user",
            )
        )
    chat, hub, _ = make_chat(config, store, writer, startup)
    return World(chat, hub, store, writer, config)


def make_chat(
    config: StorageConfig, store: Store, writer: WriteBehind, startup: StartupState
) -> tuple[Chat, Hub, Metrics]:
    """A Chat over a real Hub and LocalBroker (no compression, no coalescing delay)."""
    metrics = Metrics()
    hub = Hub(WebSocketConfig(compression="off", coalesce_ms=0), metrics)
    chat = Chat(
        config,
        hub,
        LocalBroker(hub),
        store,
        writer,
        TokenService(SECRET, 3600),
        metrics,
        startup,
        LimitsConfig().read_receipts_max_members,
    )
    return chat, hub, metrics


async def close(world: World) -> None:
    assert await world.writer.close(5.0) == 0
    world.store.mark_clean_shutdown()
    world.store.close()


@pytest.fixture
def config(tmp_path: Path) -> StorageConfig:
    return StorageConfig(path=tmp_path / "chat.db", uploads_dir=tmp_path / "uploads")


@pytest.fixture
async def world(config: StorageConfig) -> AsyncIterator[World]:
    built = await build(config, ("alice", "bob", "admin"))
    yield built
    await close(built)


def join(room: str = "general", **extra: Any) -> dict[str, Any]:
    return {"type": "join_room", "roomId": room, **extra}


def send(content: str, room: str = "general", **extra: Any) -> dict[str, Any]:
    return {"type": "send_message", "roomId": room, "content": content, **extra}


async def test_a_message_reaches_every_member_once_and_is_acked_after_commit(world: World):
    alice, bob = await world.login("alice"), await world.login("bob")
    await world.do(alice, join())
    await world.do(bob, join())
    await world.do(alice, send("one", clientId="c-1"))
    await world.do(alice, send("two", clientId="c-2"))
    for peer in (alice, bob):
        received = [e["data"]["message"] for e in peer.events("new_message")]
        assert [(m["content"], m["seq"]) for m in received] == [("one", 1), ("two", 2)]
    assert alice.events("message_ack") == []  # nothing is acked before its commit
    await world.settle()
    acks = [e["data"] for e in alice.events("message_ack")]
    assert [(a["clientId"], a["seq"]) for a in acks] == [("c-1", 1), ("c-2", 2)]
    assert bob.events("message_ack") == []
    stored = await world.store.messages_page("general", limit=10)
    assert [(row.seq, row.content) for row in stored] == [(1, "one"), (2, "two")]


async def test_a_resent_client_id_is_acked_again_and_stored_once(world: World):
    alice = await world.login("alice")
    await world.do(alice, join())
    await world.do(alice, send("hello", clientId="same"))
    await world.do(alice, send("hello", clientId="same"))  # still in flight
    await world.settle()
    await world.do(alice, send("hello", clientId="same"))  # stored: read back, acked again
    await world.settle()
    acks = [e["data"] for e in alice.events("message_ack")]
    assert len(acks) == 3 and len({a["messageId"] for a in acks}) == 1
    assert len(alice.events("new_message")) == 1
    assert len(await world.store.messages_page("general", limit=10)) == 1
    await world.do(alice, join("random"))
    await world.do(alice, send("elsewhere", room="random", clientId="same"))
    assert [e["data"]["code"] for e in alice.events("error")] == ["conflict"]


async def test_history_comes_from_memory_then_from_storage_after_a_restart(
    config: StorageConfig,
):
    world = await build(config, ("alice", "bob"))
    alice = await world.login("alice")
    await world.do(alice, join())
    for n in range(5):
        await world.do(alice, send(f"m{n}"))
    room = world.chat.directory.by_id["general"]
    page = world.chat.history.cached_page(room, None, None, 3)
    assert page is not None  # the whole range is in memory: no storage read
    assert [m["content"] for m in page[0]] == ["m2", "m3", "m4"] and page[1]
    await world.settle()
    await close(world)

    again = await build(config)
    try:
        bob = await again.login("bob")
        await again.do(bob, {"type": "get_room_history", "roomId": "general", "limit": 2})
        history = bob.events("room_history")[0]["data"]
        assert [m["content"] for m in history["messages"]] == ["m3", "m4"]
        assert history["hasMore"]
        await again.do(bob, join(since=3))
        caught_up = bob.events("room_history")[1]["data"]["messages"]
        assert [m["seq"] for m in caught_up] == [4, 5]
        await again.do(bob, send("after restart"))
        assert bob.events("new_message")[-1]["data"]["message"]["seq"] == 6
    finally:
        await close(again)


async def test_private_rooms_are_invisible_and_mutes_refuse_messages(world: World):
    alice, bob, admin = [await world.login(u) for u in ("alice", "bob", "admin")]
    await world.do(alice, {"type": "create_room", "name": "secret", "isPrivate": True})
    created = alice.events("room_created")[0]["data"]["room"]
    assert bob.events("room_created") == []  # a private room is announced to its owner only
    await world.do(bob, join(created["id"]))
    assert [e["data"]["code"] for e in bob.events("error")] == ["not_found"]
    await world.do(bob, join())
    await world.do(admin, {"type": "mute_user", "roomId": "general", "userId": "bob",
                           "durationSeconds": 60})  # fmt: skip
    assert admin.events("moderation_done")[0]["data"]["action"] == "mute"
    await world.do(bob, send("hi"))
    assert [e["data"]["code"] for e in bob.events("error")][-1] == "muted"
    assert bob.events("new_message") == []


class SuspendingStore:
    """The SQLite store, but every read made while serving yields to the loop first: what
    a network database does. Start-up reads are passed through."""

    def __init__(self, store: SqliteStore) -> None:
        self._store = store
        self.reads = 0

    def __getattr__(self, name: str) -> Any:
        attribute = getattr(self._store, name)
        if not asyncio.iscoroutinefunction(attribute):
            return attribute

        async def read(*args: Any, **kwargs: Any) -> Any:
            self.reads += 1
            await asyncio.sleep(0)
            return await attribute(*args, **kwargs)

        return read


async def test_a_request_waiting_on_storage_keeps_the_connection_in_order(
    config: StorageConfig,
):
    world = await build(config, ("alice",))
    try:
        store = SuspendingStore(world.store)
        chat, hub, metrics = make_chat(config, store, world.writer, StartupState(True, {}, 0))  # type: ignore[arg-type]
        sessions = Sessions(chat, hub, LimitsConfig(), metrics)
        peer = Peer()
        hub.opened(peer)  # type: ignore[arg-type]
        sessions.on_open(peer)  # type: ignore[arg-type]
        token = TokenService(SECRET, 3600).issue("alice", "name-alice", "user")
        # Sent back to back, as a client does: the account read and the history load wait
        # on the store, and the messages behind them must wait too, in order.
        for text in (
            {"type": "authenticate", "token": token},
            join(),
            send("first"),
            {"type": "ping"},
            send("second"),
        ):
            sessions.on_text(peer, orjson.dumps(text).decode())  # type: ignore[arg-type]
        assert peer.session.backlog  # type: ignore[attr-defined]
        for _ in range(100):
            await asyncio.sleep(0)
            if peer.session.backlog is None:  # type: ignore[attr-defined]
                break
        hub.flush()
        assert store.reads >= 2
        kinds = [e["type"] for e in peer.events()]
        assert kinds == [
            "connection_established",
            "authenticated",
            "room_joined",
            "new_message",
            "pong",
            "new_message",
        ]
        contents = [e["data"]["message"]["content"] for e in peer.events("new_message")]
        assert contents == ["first", "second"]
    finally:
        await close(world)


async def test_the_common_message_is_handled_without_a_coroutine(world: World):
    alice = await world.login("alice")
    await world.do(alice, join())
    user = await world.chat.user("alice")
    handler = world.chat.handlers[p.SendMessage]
    plain = p.parse(orjson.dumps(send("plain", clientId="new-id")))
    assert handler(alice, user, plain) is None  # type: ignore[arg-type]
    # A clientId the filter has seen may be stored: that one must look, and may wait.
    resent = handler(alice, user, plain)  # type: ignore[arg-type]
    assert asyncio.iscoroutine(resent)
    await resent
    world.hub.flush()
    assert len(alice.events("new_message")) == 1
