"""The Redis broker against a real redis-server: two brokers on two hubs play two nodes.

Each "node" is a real :class:`Hub` with real connections over recording sockets and its
own :class:`RedisBroker`; only the processes are shared (one event loop), so what one node
publishes reaches the other through Redis, exactly as between machines.
"""

from __future__ import annotations

import asyncio
import contextlib
from typing import Any

import orjson
import pytest
import redis.asyncio as aioredis
from redis.exceptions import RedisError

from fastchat.config import BrokerConfig, WebSocketConfig
from fastchat.errors import Unavailable
from fastchat.fanout.broker import AlreadyPublished
from fastchat.fanout.hub import Hub, Room
from fastchat.fanout.redis_broker import RedisBroker, _room_keys
from fastchat.metrics import Metrics
from fastchat.ws.connection import Connection
from tests.support.redis import RedisServer, redis_server  # noqa: F401  (a fixture)
from tests.support.waiting import wait_until
from tests.unit.test_hub import member, payloads


class Node:
    """A hub, its broker and what each published message's ``then`` reported."""

    def __init__(self, url: str):
        self.hub = Hub(WebSocketConfig(compression="off", coalesce_ms=0), Metrics())
        config = BrokerConfig(kind="redis", url=url, heartbeat_seconds=0.1, node_timeout_seconds=1)
        self.broker = RedisBroker(self.hub, config, gap=1000)
        self.hub.watcher = self.broker
        self.remote: list[bytes] = []
        self.broker.remote_entry = lambda room, payload: self.remote.append(payload)
        self.outcomes: list[tuple[BaseException | None, dict[str, Any]]] = []
        self.room: Room = self.broker.open_room("general", 0)
        self.presence: list[tuple[str, bool, str | None]] = []
        self.broker.presence = lambda user_id, online, at: self.presence.append(
            (user_id, online, at)
        )

    async def connect(self, number: int, limit: int = 20) -> Connection | None:
        """An authenticated connection of ``user-<number>`` (as the session admits one and
        the chat binds it), or None when the cap across nodes refuses it."""
        user_id = f"user-{number}"
        if not await self.broker.admit(user_id, limit):
            return None
        conn = member(self.hub, None, number)
        self.hub.opened(conn)
        if self.hub.bind_user(conn, user_id):
            self.broker.share_presence(user_id, True)
        return conn

    def send(self, text: str, client_id: str | None = None) -> None:
        message = {
            "id": f"id-{text}-{id(self)}",
            "seq": 0,
            "roomId": "general",
            "userId": "u1",
            "content": text,
            "clientId": client_id,
            "timestamp": "2026-12-01T22:00:00.000Z",
        }
        self.broker.publish_message(self.room, message, self._then, "extra")

    def _then(self, error: BaseException | None, message: dict[str, Any], extra: str) -> None:
        assert extra == "extra"
        self.outcomes.append((error, message))


def messages(conn: Connection) -> list[tuple[int, str]]:
    """(seq, content) of every new_message ``conn`` received, in order."""
    events = [orjson.loads(payload) for payload in payloads(conn)]
    return [
        (e["data"]["message"]["seq"], e["data"]["message"]["content"])
        for e in events
        if e["type"] == "new_message"
    ]


async def until_subscribers(url: str, count: int) -> None:
    """Wait until ``count`` nodes are subscribed to the room "general" (Redis tells)."""
    channel = _room_keys("general")[2]
    client = aioredis.from_url(url)
    try:
        for _ in range(1000):
            if dict(await client.pubsub_numsub(channel))[channel.encode()] == count:
                return
            await asyncio.sleep(0.005)
        raise AssertionError(f"never {count} subscribers")
    finally:
        await client.aclose()


@pytest.fixture
async def nodes(redis_server: RedisServer):  # noqa: F811
    made = [Node(redis_server.url), Node(redis_server.url)]
    for node in made:
        await node.broker.start()
    yield made
    for node in made:
        await node.broker.close()


async def test_both_nodes_deliver_a_room_in_one_seq_order_the_origin_too(nodes, redis_server):  # noqa: F811
    a, b = nodes
    alice, bob = member(a.hub, a.room, 1), member(b.hub, b.room, 2)
    await until_subscribers(redis_server.url, 2)
    for round_ in range(20):  # both nodes publish in the same loop iterations
        for i in range(5):
            a.send(f"a{round_}.{i}")
            b.send(f"b{round_}.{i}")
        await asyncio.sleep(0)
    await wait_until(lambda: len(messages(alice)) == 200 and len(messages(bob)) == 200)
    assert messages(alice) == messages(bob)
    assert [seq for seq, _ in messages(alice)] == list(range(1, 201))
    # each origin's `then` got the seq its message was delivered with
    delivered = dict((content, seq) for seq, content in messages(alice))
    for node in nodes:
        assert all(error is None for error, _ in node.outcomes)
        assert {m["content"]: m["seq"] for _, m in node.outcomes}.items() <= delivered.items()
    # the other node's messages were handed to its chat (history), its own were not
    assert len(a.remote) == len(b.remote) == 100
    assert all(b'"content":"b' in payload for payload in a.remote)


async def test_a_node_is_subscribed_to_a_room_only_while_it_has_members(nodes, redis_server):  # noqa: F811
    a, b = nodes
    await until_subscribers(redis_server.url, 0)
    alice = member(a.hub, a.room, 1)
    await until_subscribers(redis_server.url, 1)
    a.send("only a listens")
    await wait_until(lambda: messages(alice) == [(1, "only a listens")])
    assert b.remote == []  # b heard nothing: it was not subscribed

    await b.broker.follow(b.room)  # as a join does before the connection enters
    bob = member(b.hub, b.room, 2)
    await until_subscribers(redis_server.url, 2)
    a.send("both listen")
    await wait_until(lambda: messages(bob) == [(2, "both listen")])
    # bob joined after the first message: it reached b's history, not bob
    assert [orjson.loads(p)["data"]["message"]["seq"] for p in b.remote] == [1, 2]

    b.hub.leave(b.room, bob)
    await until_subscribers(redis_server.url, 1)


async def test_a_lost_subscription_is_refilled_from_the_stream_in_order(nodes, redis_server):  # noqa: F811
    a, b = nodes
    member(a.hub, a.room, 1)
    bob = member(b.hub, b.room, 2)
    await until_subscribers(redis_server.url, 2)
    a.send("before")
    await wait_until(lambda: messages(bob) == [(1, "before")])
    admin = aioredis.from_url(redis_server.url)
    try:
        await admin.execute_command("CLIENT", "KILL", "TYPE", "pubsub")
        await wait_until(lambda: not b.broker.connected)
        for i in range(10):
            a.send(f"while b was away {i}")
            await asyncio.sleep(0)
        await wait_until(lambda: len(a.outcomes) == 11)
    finally:
        await admin.aclose()
    a.send("after")
    await wait_until(lambda: len(messages(bob)) == 12, timeout=10)
    assert [seq for seq, _ in messages(bob)] == list(range(1, 13))
    assert messages(bob)[-1] == (12, "after")
    assert b.broker.connected


async def test_sends_while_redis_is_down_are_refused_and_seqs_go_on_after(nodes, redis_server):  # noqa: F811
    a, _ = nodes
    alice = member(a.hub, a.room, 1)
    await until_subscribers(redis_server.url, 1)
    a.send("one")
    await wait_until(lambda: messages(alice) == [(1, "one")])
    redis_server.stop()
    a.send("lost")
    await wait_until(lambda: len(a.outcomes) == 2, timeout=10)
    error, _ = a.outcomes[1]
    assert isinstance(error, Unavailable) and error.code == "unavailable"
    await wait_until(lambda: not a.broker.connected)
    assert "redis" in a.broker.last_error

    redis_server.start()  # same port, no data: the seq must not start over
    await wait_until(lambda: a.broker.connected, timeout=10)
    a.send("two")
    await wait_until(lambda: len(a.outcomes) == 3, timeout=10)
    assert a.outcomes[2][0] is None
    assert a.outcomes[2][1]["seq"] > 1
    await wait_until(lambda: len(messages(alice)) == 2, timeout=10)
    assert messages(alice)[1][1] == "two"


async def test_user_events_reach_the_users_connections_on_every_node(nodes):
    a, b = nodes
    bob, stranger = member(b.hub, None, 2), member(b.hub, None, 3)
    for conn in (bob, stranger):
        b.hub.opened(conn)
        b.hub.bind_user(conn, conn.user_id)  # type: ignore[arg-type]
    a.broker.send_user("user-2", b'{"type":"private_message"}')
    a.broker.send_everyone(b'{"type":"everyone"}')
    await wait_until(lambda: len(payloads(bob)) == 2)
    assert payloads(bob) == [b'{"type":"private_message"}', b'{"type":"everyone"}']
    await wait_until(lambda: len(payloads(stranger)) == 1)
    assert payloads(stranger) == [b'{"type":"everyone"}']


async def test_direct_message_seqs_are_unique_across_nodes(nodes):
    a, b = nodes
    seqs = [a.broker.next_direct_seq() for _ in range(5)] + [
        b.broker.next_direct_seq() for _ in range(5)
    ]
    assert len(set(seqs)) == 10


async def test_moderation_and_presence_reach_the_other_nodes_only(nodes):
    a, b = nodes
    controls: dict[str, list[bytes]] = {"a": [], "b": []}
    a.broker.control = controls["a"].append
    b.broker.control = controls["b"].append
    changes: list[tuple[str, bool]] = []
    b.broker.presence = lambda user_id, online, at: changes.append((user_id, online))

    a.broker.send_control(b'{"action":"ban","userId":"u1"}')
    a.broker.share_presence("u1", True)
    await wait_until(lambda: changes == [("u1", True)])
    assert controls == {"a": [], "b": [b'{"action":"ban","userId":"u1"}']}
    assert b.broker.online_elsewhere("u1") and not a.broker.online_elsewhere("u1")

    a.broker.share_presence("u1", True)  # a second tab there: no change
    a.broker.share_presence("u1", False)
    await wait_until(lambda: len(changes) == 2)
    assert changes[1] == ("u1", False) and not b.broker.online_elsewhere("u1")


async def test_a_clientid_resent_to_another_node_is_published_once(nodes, redis_server):  # noqa: F811
    a, b = nodes
    alice, bob = member(a.hub, a.room, 1), member(b.hub, b.room, 2)
    await until_subscribers(redis_server.url, 2)
    a.send("hello", client_id="c1")
    await wait_until(lambda: len(a.outcomes) == 1)
    b.send("hello", client_id="c1")  # the same clientId, resent through the other node
    b.send("next", client_id="c2")
    await wait_until(lambda: len(b.outcomes) == 2)
    (first_error, first), (again_error, again) = a.outcomes[0], b.outcomes[0]
    assert first_error is None and isinstance(again_error, AlreadyPublished)
    assert (again["id"], again["seq"], again["timestamp"]) == (
        first["id"],
        first["seq"],
        first["timestamp"],
    )
    assert b.outcomes[1][0] is None
    await wait_until(lambda: len(messages(bob)) == 2)
    assert messages(alice)[:2] == messages(bob) == [(1, "hello"), (2, "next")]


async def test_a_node_started_later_learns_who_is_online_elsewhere(redis_server):  # noqa: F811
    a = Node(redis_server.url)
    await a.broker.start()
    b = Node(redis_server.url)
    try:
        await a.connect(1)
        await b.broker.start()
        assert b.broker.online_elsewhere("user-1") and list(b.broker.users_elsewhere()) == [
            "user-1"
        ]
        assert b.presence == [("user-1", True, None)]
    finally:
        await a.broker.close()
        await b.broker.close()


async def test_the_connection_cap_holds_across_nodes(nodes):
    a, b = nodes
    assert await a.connect(1, limit=2) is not None
    assert await b.connect(1, limit=2) is not None
    assert await a.connect(1, limit=2) is None  # one on each node: the cap is reached
    assert await b.connect(2, limit=2) is not None  # another user is not held back
    b.broker.release("user-1")
    for _ in range(100):  # the release is a task of its own
        if (third := await a.connect(1, limit=2)) is not None:
            break
        await asyncio.sleep(0.01)
    assert third is not None


async def test_a_node_that_stops_beating_takes_its_users_offline_elsewhere(redis_server):  # noqa: F811
    a, b = Node(redis_server.url), Node(redis_server.url)
    for node in (a, b):
        await node.broker.start()
    try:
        await a.connect(1)
        await wait_until(lambda: b.presence == [("user-1", True, None)])
        a.broker._heart.cancel()  # node A stalls (its process would be gone: no goodbye)
        await wait_until(lambda: len(b.presence) >= 2, timeout=5)
        user_id, online, at = b.presence[1]
        assert (user_id, online) == ("user-1", False) and at is not None and at.endswith("Z")
        # node A sees it was taken for dead and counts itself in again: online once more
        await wait_until(lambda: len(b.presence) >= 3, timeout=5)
        assert b.presence[2] == ("user-1", True, None)
    finally:
        await a.broker.close()
        await b.broker.close()


async def test_a_redis_restart_keeps_who_is_online_where(nodes, redis_server):  # noqa: F811
    a, b = nodes
    await a.connect(1)
    await wait_until(lambda: b.presence == [("user-1", True, None)])
    redis_server.restart()  # its data is gone: each node counts its connections in again
    admin = aioredis.from_url(redis_server.url)
    try:
        for _ in range(1000):
            with contextlib.suppress(RedisError):
                if await admin.hget(f"fc:{{p}}:n:{a.broker.node_id}", "user-1") == b"1":
                    break
            await asyncio.sleep(0.01)
    finally:
        await admin.aclose()
    assert await b.connect(1, limit=2) is not None
    assert await b.connect(1, limit=2) is None  # A's connection is counted again
    assert b.presence == [("user-1", True, None)] and b.broker.online_elsewhere("user-1")


async def test_a_node_stopped_cleanly_takes_its_users_offline_elsewhere_at_once(redis_server):  # noqa: F811
    a, b = Node(redis_server.url), Node(redis_server.url)
    for node in (a, b):
        await node.broker.start()
    try:
        await a.connect(1)
        await wait_until(lambda: b.presence == [("user-1", True, None)])
        await a.broker.close()  # its connections still open: the goodbye says it all
        await wait_until(lambda: len(b.presence) == 2)
        assert b.presence[1] == ("user-1", False, None)  # said, not timed out (no last beat)
        assert await b.connect(1, limit=1) is not None  # A's connection counts no more
    finally:
        await b.broker.close()
