"""Two real `fastchat run` nodes on one real Redis and one real PostgreSQL database, the
clients on different nodes: one room order on both, direct messages, presence, moderation,
uploads through either node, catch-up elsewhere, and a node killed under load."""

from __future__ import annotations

import asyncio
import signal
from pathlib import Path

import httpx
import pytest
import redis

from tests.e2e.test_presence import bounce
from tests.e2e.test_uploads import upload
from tests.support.accounts import PASSWORD, create_account, register
from tests.support.client import ChatClient
from tests.support.redis import RedisServer, redis_server  # noqa: F401  (a fixture)
from tests.support.server import ServerProcess
from tests.support.waiting import wait_until

SECRET = "a-cluster-wide-jwt-secret-of-32-bytes-or-more"


def node_factory(tmp_path: Path, redis_url: str, dsn: str, nodes: list[ServerProcess]):
    """Nodes sharing Redis, the database, the JWT secret and the uploads folder; a node
    silent for 3 s is taken for dead."""

    def node(**limits: object) -> ServerProcess:
        directory = tmp_path / f"node{len(nodes)}"
        directory.mkdir()
        server = ServerProcess.configured(
            directory,
            storage={
                "backend": "postgres",
                "dsn": dsn,
                "uploads_dir": str(tmp_path / "uploads"),
            },
            broker={
                "kind": "redis",
                "url": redis_url,
                "heartbeat_seconds": 0.5,
                "node_timeout_seconds": 3.0,
            },
            auth={"jwt_secret": SECRET},
            limits={"messages_per_second": 1000.0, "burst": 1000, **limits},
        )
        nodes.append(server)
        return server.start()

    return node


def stop_nodes(nodes: list[ServerProcess]) -> None:
    for number, server in enumerate(nodes):
        server.kill()
        print(f"--- node {number} log ---", *server.log[-40:], sep="\n")  # shown on failure


@pytest.fixture
def cluster(tmp_path: Path, redis_server: RedisServer, postgres_cluster):  # noqa: F811
    """Factory of nodes (:func:`node_factory`) on the session's PostgreSQL."""
    nodes: list[ServerProcess] = []
    yield node_factory(tmp_path, redis_server.url, postgres_cluster.new_database(), nodes)
    stop_nodes(nodes)


@pytest.fixture
def cluster_on_own_postgres(tmp_path: Path, redis_server: RedisServer, own_postgres):  # noqa: F811
    """Factory of nodes on a PostgreSQL of the test's own (to stop and start), and that."""
    nodes: list[ServerProcess] = []
    yield node_factory(tmp_path, redis_server.url, own_postgres.new_database(), nodes), own_postgres
    stop_nodes(nodes)


async def member(node: ServerProcess, token: str, room: str = "general") -> ChatClient:
    client = await ChatClient.connect(node.ws_url, token)
    client.send(type="join_room", roomId=room)
    await client.expect("room_joined", roomId=room)
    return client


async def test_a_room_has_one_order_on_every_node(cluster):
    a, b = cluster(), cluster()
    alice_account, bob_account = register(a.base_url), register(b.base_url)
    alice = await member(a, alice_account["token"])
    bob = await member(b, bob_account["token"])
    for i in range(30):
        alice.send(type="send_message", roomId="general", content=f"a{i}", clientId=f"a{i}")
        bob.send(type="send_message", roomId="general", content=f"b{i}", clientId=f"b{i}")
    seen_a = [(await alice.expect("new_message"))["message"] for _ in range(60)]
    seen_b = [(await bob.expect("new_message"))["message"] for _ in range(60)]
    assert [(m["seq"], m["content"]) for m in seen_a] == [(m["seq"], m["content"]) for m in seen_b]
    seqs = [m["seq"] for m in seen_a]
    assert seqs == sorted(seqs) and len(set(seqs)) == 60
    # per sender, its order is kept
    assert [m["content"] for m in seen_a if m["content"][0] == "a"] == [f"a{i}" for i in range(30)]
    acks = {e["data"]["clientId"] for e in alice.seen if e["type"] == "message_ack"}
    while len(acks) < 30:  # those not already read while waiting for the messages
        acks.add((await alice.expect("message_ack"))["clientId"])
    assert acks == {f"a{i}" for i in range(30)}

    # a client that reconnects to the other node catches up with `since`
    carol = await ChatClient.connect(b.ws_url, alice_account["token"])
    carol.send(type="join_room", roomId="general", since=seqs[9])
    history = await carol.expect("room_history", roomId="general")
    assert [m["seq"] for m in history["messages"]] == seqs[10:]
    for client in (alice, bob, carol):
        await client.close()


async def test_direct_messages_and_presence_cross_nodes(cluster):
    a, b = cluster(), cluster()
    alice_account, bob_account = register(a.base_url), register(b.base_url)
    alice = await member(a, alice_account["token"])
    bob = await member(b, bob_account["token"])
    bob_id = bob_account["user"]["id"]
    await alice.expect("user_joined", roomId="general")
    await bob.close()
    await alice.expect("user_status", userId=bob_id, status="offline")
    bob = await member(b, bob_account["token"])
    await alice.expect("user_status", userId=bob_id, status="online")

    alice.send(type="private_message", targetUserId=bob_account["user"]["id"], content="hi")
    dm = await bob.expect("private_message")
    assert dm["content"] == "hi" and dm["from"]["id"] == alice_account["user"]["id"]
    await alice.expect("private_message_sent")

    bob.send(type="typing_start", roomId="general")
    typing = await alice.expect("user_typing")
    assert typing["userId"] == bob_account["user"]["id"]
    for client in (alice, bob):
        await client.close()


async def test_dm_peers_sharing_no_room_see_presence_across_nodes(cluster):
    a, b = cluster(), cluster()
    alice_account, bob_account = register(a.base_url), register(b.base_url)
    alice_id, bob_id = alice_account["user"]["id"], bob_account["user"]["id"]
    alice = await ChatClient.connect(a.ws_url, alice_account["token"])  # in no room
    bob = await ChatClient.connect(b.ws_url, bob_account["token"])
    alice.send(type="private_message", targetUserId=bob_id, content="hi")
    await bob.expect("private_message")
    # Learned on bob's node from the message sent on alice's: her presence reaches him.
    alice = await bounce(alice, alice_account, a.ws_url, bob)
    # Learned at login from the stored conversations, the peer online on the other node.
    await bob.close()
    await alice.expect("user_status", userId=bob_id, status="offline")
    bob = await ChatClient.connect(b.ws_url)
    (conversation,) = (await bob.authenticate(bob_account["token"]))["conversations"]
    assert conversation["user"]["id"] == alice_id and conversation["user"]["online"] is True
    await alice.expect("user_status", userId=bob_id, status="online")
    await alice.close()
    await bob.expect("user_status", userId=alice_id, status="offline")
    await bob.close()


async def test_a_ban_on_one_node_closes_the_users_sockets_on_the_other(cluster):
    a, b = cluster(), cluster()
    admin_name = create_account(a, "admin")
    login = httpx.post(
        f"{a.base_url}/api/auth/login", json={"username": admin_name, "password": PASSWORD}
    )
    admin = await member(a, login.json()["token"])
    target = register(b.base_url)
    victim = await member(b, target["token"])
    admin.send(type="ban_user", userId=target["user"]["id"], reason="spam")
    await admin.expect("moderation_done", action="ban")
    await victim.expect("banned")
    assert await victim.closed() == 4003
    again = await ChatClient.connect(b.ws_url)
    again.send(type="authenticate", token=target["token"])
    await again.expect_error("banned")
    await admin.close()


async def test_a_file_uploaded_through_one_node_downloads_through_the_other(cluster):
    # The nodes share the uploads folder (storage.uploads_dir) and the database.
    a, b = cluster(), cluster()
    account = register(a.base_url)
    with httpx.Client(base_url=a.base_url) as http:
        uploaded = upload(http, account["token"], b"shared bytes", "note.txt", "text/plain")
    assert uploaded.status_code == 201, uploaded.text
    url = uploaded.json()["file"]["url"]
    headers = {"Authorization": f"Bearer {account['token']}"}
    download = httpx.get(b.base_url + url, headers=headers)
    assert download.status_code == 200 and download.content == b"shared bytes"


async def test_a_killed_node_loses_no_acked_message(cluster):
    a, b = cluster(), cluster()
    writer_account, reader_account = register(a.base_url), register(b.base_url)
    writer = await member(a, writer_account["token"])
    reader = await member(b, reader_account["token"])
    acked: dict[str, int] = {}
    sent = 0
    while len(acked) < 50:  # a steady load: 5 in flight, the next sent as each is acked
        while sent - len(acked) < 5:
            writer.send(type="send_message", roomId="general", content="x", clientId=f"m{sent}")
            sent += 1
        ack = await writer.expect("message_ack")
        acked[ack["clientId"]] = ack["seq"]
    a.process.send_signal(signal.SIGKILL)  # type: ignore[union-attr]  # mid-load
    await writer.closed(timeout=10)
    for event in writer.drain():
        if event["type"] == "message_ack":
            acked[event["data"]["clientId"]] = event["data"]["seq"]

    # the writer reconnects to the surviving node, resends what was not acked, reads back
    again = await member(b, writer_account["token"])
    unacked = [f"m{i}" for i in range(sent) if f"m{i}" not in acked]
    for client_id in unacked:
        again.send(type="send_message", roomId="general", content="x", clientId=client_id)
    for _ in unacked:
        ack = await again.expect("message_ack")
        acked[ack["clientId"]] = ack["seq"]
    again.send(type="get_room_history", roomId="general", limit=100)
    history = await again.expect("room_history", roomId="general")
    stored = {m["clientId"]: m["seq"] for m in history["messages"]}
    assert len(stored) == len(history["messages"]) == sent  # every message once
    assert acked == stored  # each with the seq it was acked with
    await reader.close()
    await again.close()


async def test_workers_share_one_port_and_its_rooms(tmp_path, redis_server, postgres_cluster):  # noqa: F811
    server = ServerProcess.configured(
        tmp_path,
        storage={"backend": "postgres", "dsn": postgres_cluster.new_database()},
        broker={"kind": "redis", "url": redis_server.url},
    )
    server.run_args = ("--workers", "2")
    server.start()
    try:
        account = register(server.base_url)
        clients = [await member(server, account["token"]) for _ in range(8)]
        clients[0].send(type="send_message", roomId="general", content="to all workers")
        for client in clients:
            assert (await client.expect("new_message"))["message"]["content"] == "to all workers"
        await wait_until(lambda: sum("fastchat listening on" in line for line in server.log) == 2)
        for client in clients:
            await client.close()
    finally:
        assert server.stop() == 0


async def test_private_rooms_invites_edits_deletes_and_replies_cross_nodes(cluster):
    a, b = cluster(), cluster()
    alice_account, bob_account = register(a.base_url), register(b.base_url)
    alice = await ChatClient.connect(a.ws_url, alice_account["token"])
    bob = await ChatClient.connect(b.ws_url, bob_account["token"])
    alice.send(type="create_room", name="secret", isPrivate=True)
    room_id = (await alice.expect("room_created"))["room"]["id"]
    alice.send(type="invite_to_room", roomId=room_id, userId=bob_account["user"]["id"])
    await bob.expect("room_invited")
    alice.send(type="join_room", roomId=room_id)
    await alice.expect("room_joined", roomId=room_id)
    bob.send(type="join_room", roomId=room_id)  # on the other node, which learnt the room
    await bob.expect("room_joined", roomId=room_id)

    alice.send(type="send_message", roomId=room_id, content="first", clientId="f")
    first = (await bob.expect("new_message"))["message"]
    await alice.expect("message_ack", clientId="f")  # stored: the other node finds it there
    bob.send(type="send_message", roomId=room_id, content="re", replyTo=first["id"])
    assert (await bob.expect("new_message"))["message"]["content"] == "re"
    reply = (await alice.expect("new_message"))["message"]
    assert reply["content"] == "re" and reply["replyTo"] == first["id"]
    assert (await alice.expect("thread_updated"))["replyCount"] == 1
    alice.send(type="edit_message", messageId=first["id"], content="first, edited")
    edited = (await bob.expect("message_edited"))["message"]
    assert edited["content"] == "first, edited"
    assert edited["replyCount"] == 1  # the editing node's window counted the remote reply
    bob.send(type="delete_message", messageId=reply["id"])
    assert (await alice.expect("message_deleted"))["messageId"] == reply["id"]
    assert (await alice.expect("thread_updated"))["replyCount"] == 0
    alice.send(type="get_room_history", roomId=room_id)
    (parent, _) = (await alice.expect("room_history"))["messages"]
    assert parent["id"] == first["id"] and parent["replyCount"] == 0
    for client in (alice, bob):
        await client.close()


async def room_joined(node: ServerProcess, token: str) -> dict:
    """The ``room_joined`` of a fresh connection joining "general" on ``node``."""
    client = await ChatClient.connect(node.ws_url, token)
    try:
        client.send(type="join_room", roomId="general")
        return await client.expect("room_joined", roomId="general")
    finally:
        await client.close()


async def member_statuses(node: ServerProcess, token: str) -> dict[str, str]:
    """User id -> status of the members listed by a join of "general" on ``node``."""
    return {m["id"]: m["status"] for m in (await room_joined(node, token))["members"]}


async def test_a_node_killed_without_a_word_takes_its_users_offline_on_the_others(cluster):
    a, b = cluster(), cluster()
    alice_account, bob_account = register(a.base_url), register(b.base_url)
    bob_id = bob_account["user"]["id"]
    alice = await member(a, alice_account["token"])
    bob = await member(b, bob_account["token"])
    await alice.expect("user_joined", roomId="general")
    bob.send(type="send_message", roomId="general", content="hi", clientId="hi")
    await bob.expect("message_ack")  # stored, and his membership before it
    b.process.send_signal(signal.SIGKILL)  # type: ignore[union-attr]
    await bob.closed(timeout=10)
    # node B's heartbeat stops: node A reaps it within the timeout plus a beat
    offline = await alice.expect("user_status", timeout=15, userId=bob_id, status="offline")

    # the last seen is node B's last beat, written by the surviving node (write-behind: a
    # join may come before it is stored)
    for _ in range(100):
        members = {m["id"]: m for m in (await room_joined(a, alice_account["token"]))["members"]}
        assert members[bob_id]["status"] == "offline"
        if members[bob_id]["last_seen"] == offline["timestamp"]:
            break
        await asyncio.sleep(0.05)
    assert members[bob_id]["last_seen"] == offline["timestamp"]
    await alice.close()


async def test_room_joined_lists_the_members_online_on_every_node(cluster):
    a = cluster()
    bob_account = register(a.base_url)
    bob_id = bob_account["user"]["id"]
    bob = await member(a, bob_account["token"])
    bob.send(type="send_message", roomId="general", content="hi", clientId="hi")
    await bob.expect("message_ack")  # his membership is stored
    b = cluster()  # started later: learns from Redis who is online on node A
    alice_account = register(b.base_url)
    statuses = await member_statuses(b, alice_account["token"])
    assert statuses[bob_id] == statuses[alice_account["user"]["id"]] == "online"

    alice = await member(b, alice_account["token"])
    await bob.close()
    await alice.expect("user_status", userId=bob_id, status="offline")
    statuses = await member_statuses(b, alice_account["token"])
    assert statuses[bob_id] == "offline"
    await alice.close()


def open_connections(redis_url: str, user_id: str) -> int:
    """The user's connections counted in Redis over every node."""
    client = redis.Redis.from_url(redis_url)
    try:
        return sum(int(client.hget(key, user_id) or 0) for key in client.scan_iter("fc:{p}:n:*"))
    finally:
        client.close()


async def test_the_per_user_connection_cap_holds_across_nodes(cluster, redis_server):  # noqa: F811
    a, b = cluster(max_connections_per_user=2), cluster(max_connections_per_user=2)
    account = register(a.base_url)
    user_id = account["user"]["id"]
    first = await ChatClient.connect(a.ws_url, account["token"])
    second = await ChatClient.connect(b.ws_url, account["token"])
    third = await ChatClient.open(a.ws_url)
    await third.expect("connection_established")
    third.send(type="authenticate", token=account["token"])
    assert await third.closed() == 1008  # one on each node: the cap of 2 is reached
    await second.close()
    await wait_until(lambda: open_connections(redis_server.url, user_id) == 1)
    again = await ChatClient.connect(a.ws_url, account["token"])  # room again
    for client in (first, again):
        await client.close()


async def test_a_postgres_restart_under_a_multi_node_load_delays_acks_and_loses_nothing(
    cluster_on_own_postgres,
):
    node, postgres = cluster_on_own_postgres
    a, b = node(), node()
    alice = await member(a, register(a.base_url)["token"])
    bob = await member(b, register(b.base_url)["token"])
    senders = {"a": alice, "b": bob}
    for name, client in senders.items():
        client.send(type="send_message", roomId="general", content="x", clientId=f"{name}0")
        await client.expect("message_ack", clientId=f"{name}0")

    await asyncio.to_thread(postgres.stop)
    during = [f"{name}{i}" for i in range(1, 11) for name in senders]
    for client_id in during:
        senders[client_id[0]].send(
            type="send_message", roomId="general", content="x", clientId=client_id
        )
    # fan-out goes on without the database, in one order on both nodes
    order: dict[str, list[tuple[int, str]]] = {}
    for name, client in senders.items():
        order[name] = []
        while len(order[name]) < len(during):
            message = (await client.expect("new_message"))["message"]
            if message["clientId"] in during:
                order[name].append((message["seq"], message["clientId"]))
    assert order["a"] == order["b"]
    for client in senders.values():
        client.drain()  # into client.seen
    acked = [
        e["data"]["clientId"]
        for c in senders.values()
        for e in c.seen
        if e["type"] == "message_ack"
    ]
    assert sorted(acked) == ["a0", "b0"]  # nothing acked while the database is down

    await asyncio.to_thread(postgres.start)
    seq_of = {client_id: seq for seq, client_id in order["a"]}
    for name, client in senders.items():
        mine = [f"{name}{i}" for i in range(1, 11)]
        acks = [await client.expect("message_ack", timeout=20) for _ in mine]
        assert [ack["clientId"] for ack in acks] == mine  # in the order sent
        assert [ack["seq"] for ack in acks] == [seq_of[client_id] for client_id in mine]
    alice.send(type="get_room_history", roomId="general", limit=100)
    history = await alice.expect("room_history", roomId="general")
    stored = [(m["seq"], m["clientId"]) for m in history["messages"]]
    assert [client_id for _, client_id in stored[:2]] in (["a0", "b0"], ["b0", "a0"])
    assert stored[2:] == order["a"]  # every message once, with the seq it was delivered with
    for client in senders.values():
        await client.close()


async def test_a_fresh_node_answers_concurrent_first_requests(cluster):
    """Requests that wait on the same pending future (the first reads of a node share one
    database connection attempt) each get their answer."""
    a = cluster()
    accounts = [register(a.base_url) for _ in range(10)]
    b = cluster()  # nothing read yet: the ten authentications are its first reads
    clients = await asyncio.gather(
        *(ChatClient.connect(b.ws_url, account["token"]) for account in accounts)
    )
    for client in clients:
        await client.close()
