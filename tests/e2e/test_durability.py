"""Durability end to end: SIGKILL under write load, graceful stop, a disk that fills up.

Every scenario runs a real server process with real picows clients; restarts reuse the
same data folder (``ServerProcess.start()`` again with the same config).
"""

from __future__ import annotations

import asyncio
import os
import random
import signal
import sqlite3
import subprocess
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import httpx
import pytest

from tests.support.accounts import PASSWORD, create_account, register
from tests.support.client import ChatClient
from tests.support.server import ServerProcess
from tests.support.waiting import wait_until

ROOM = "general"
# Publishers send as fast as acks allow: the rate limiter must not be what slows them down.
UNLIMITED = {"messages_per_second": 1_000_000.0, "burst": 1_000_000}


@dataclass
class Publisher:
    """One account sending messages with clientIds, at most ``window`` unacknowledged."""

    client: ChatClient
    token: str
    prefix: str
    window: int
    sent: dict[str, str] = field(default_factory=dict)  # clientId -> content
    acked: dict[str, tuple[str, int]] = field(default_factory=dict)  # clientId -> (id, seq)
    broadcast: dict[str, dict[str, Any]] = field(default_factory=dict)  # id -> message
    errors: list[dict[str, Any]] = field(default_factory=list)
    close_code: int | None = None

    def send_next(self) -> None:
        client_id = f"{self.prefix}-{len(self.sent)}"
        self.sent[client_id] = f"message {client_id}"
        self.client.send(
            type="send_message", roomId=ROOM, content=self.sent[client_id], clientId=client_id
        )

    def record(self, event: dict[str, Any]) -> bool:
        """Note one server event; True when it was an ack (a slot in the window is free)."""
        data = event["data"]
        if event["type"] == "new_message":
            self.broadcast[data["message"]["id"]] = data["message"]
        elif event["type"] == "message_ack":
            self.acked[data["clientId"]] = (data["messageId"], data["seq"])
            return True
        elif event["type"] == "error":
            self.errors.append(data)
        return False

    async def run(self, progress: asyncio.Event, acks_wanted: int, everyone: list[Publisher]):
        """Send until the server goes away; set ``progress`` once enough acks arrived."""
        for _ in range(self.window):
            self.send_next()
        while not self.client.transport.is_disconnected:
            try:
                event = await self.client.next(0.2)
            except TimeoutError:
                continue
            if self.record(event):
                self.send_next()
                if sum(len(p.acked) for p in everyone) >= acks_wanted:
                    progress.set()
        for event in self.client.drain():  # what arrived before the socket closed
            self.record(event)
        self.close_code = await self.client.closed(5)

    @property
    def unacked(self) -> list[str]:
        return [client_id for client_id in self.sent if client_id not in self.acked]


async def start_publishers(server: ServerProcess, count: int, window: int) -> list[Publisher]:
    publishers = []
    for index in range(count):
        account = register(server.base_url)
        client = await ChatClient.connect(server.ws_url, account["token"])
        client.send(type="join_room", roomId=ROOM)
        await client.expect("room_joined", roomId=ROOM)
        publishers.append(Publisher(client, account["token"], f"p{index}", window))
    return publishers


async def load_until(publishers: list[Publisher], acks_wanted: int) -> tuple[asyncio.Task, ...]:
    """Start every publisher; return once ``acks_wanted`` acks arrived in total."""
    progress = asyncio.Event()
    tasks = tuple(asyncio.create_task(p.run(progress, acks_wanted, publishers)) for p in publishers)
    waiter = asyncio.create_task(progress.wait())
    done, _ = await asyncio.wait({waiter, *tasks}, timeout=30, return_when="FIRST_COMPLETED")
    assert waiter in done, "the load never reached the wanted number of acks"
    return tasks


async def room_history(client: ChatClient) -> dict[int, dict[str, Any]]:
    """The whole history of the room through the server, by seq."""
    messages: dict[int, dict[str, Any]] = {}
    after = 0
    while True:
        client.send(type="get_room_history", roomId=ROOM, after=after, limit=200)
        page = await client.expect("room_history", roomId=ROOM)
        for message in page["messages"]:
            messages[message["seq"]] = message
        if not page["hasMore"]:
            return messages
        after = page["messages"][-1]["seq"]


def restart(server: ServerProcess) -> None:
    """Start the same server again, on the same data folder."""
    assert server.process is not None
    server.process.wait(10)
    server.start()


@pytest.mark.parametrize("seed", [1, 2, 3])
async def test_sigkill_under_load_loses_no_acked_message(make_server, seed):
    rng = random.Random(seed)
    server = make_server(limits=UNLIMITED)
    publishers = await start_publishers(server, count=4, window=rng.choice([4, 8, 16]))
    tasks = await load_until(publishers, acks_wanted=rng.randint(20, 600))
    # A few more event-loop turns of load, so the kill lands mid-batch at a random point.
    for _ in range(rng.randint(0, 30)):
        await asyncio.sleep(0)
    server.process.kill()
    await asyncio.gather(*tasks)
    assert server.process.wait(10) == -signal.SIGKILL

    acked = {cid: ids for p in publishers for cid, ids in p.acked.items()}
    broadcast = {mid: m for p in publishers for mid, m in p.broadcast.items()}
    max_seen_seq = max(m["seq"] for m in broadcast.values())
    assert len(acked) >= 20 and all(not p.errors for p in publishers)

    restart(server)
    reader = await ChatClient.connect(server.ws_url, publishers[0].token)
    history = await room_history(reader)
    by_id = {m["id"]: m for m in history.values()}
    # Every acknowledged message survived with the id and seq it was acknowledged with.
    for client_id, (message_id, seq) in acked.items():
        assert message_id in by_id, f"acked {client_id} lost"
        assert by_id[message_id]["seq"] == seq and by_id[message_id]["clientId"] == client_id
    # A seq handed out before the crash is never given to another message.
    for message in broadcast.values():
        stored = history.get(message["seq"])
        assert stored is None or stored["id"] == message["id"]

    # Resend everything unacknowledged with its clientId, as a reconnecting client does.
    resent: dict[str, tuple[str, int]] = {}
    for p in publishers:
        client = await ChatClient.connect(server.ws_url, p.token)
        client.send(type="join_room", roomId=ROOM)
        await client.expect("room_joined", roomId=ROOM)
        for client_id in p.unacked:
            client.send(
                type="send_message", roomId=ROOM, content=p.sent[client_id], clientId=client_id
            )
        for client_id in p.unacked:
            ack = await client.expect("message_ack", clientId=client_id)
            resent[client_id] = (ack["messageId"], ack["seq"])
        await client.close()
    for client_id, (message_id, seq) in resent.items():
        if message_id in by_id:  # stored before the crash, its ack lost: re-acked as it was
            assert by_id[message_id]["seq"] == seq and by_id[message_id]["clientId"] == client_id
        else:  # never stored: a new message, numbered after everything seen before
            assert seq > max_seen_seq

    reader.send(type="join_room", roomId=ROOM)
    await reader.expect("room_joined", roomId=ROOM)
    reader.send(type="send_message", roomId=ROOM, content="after the crash", clientId="new")
    fresh = await reader.expect("message_ack", clientId="new")
    assert fresh["seq"] > max_seen_seq

    final = await room_history(reader)
    client_ids = [m["clientId"] for m in final.values() if m["clientId"] != "new"]
    assert len(client_ids) == len(set(client_ids))  # no duplicate, whatever was resent
    assert set(client_ids) == {cid for p in publishers for cid in p.sent}
    await reader.close()
    assert server.stop() == 0


async def test_graceful_stop_under_load_loses_nothing(make_server):
    server = make_server(limits=UNLIMITED, storage={"flush_interval_ms": 200})
    publishers = await start_publishers(server, count=3, window=16)
    tasks = await load_until(publishers, acks_wanted=50)
    server.process.send_signal(signal.SIGTERM)
    await asyncio.gather(*tasks)
    assert server.stop() == 0
    assert [p.close_code for p in publishers] == [1001, 1001, 1001]

    broadcast = {mid: m for p in publishers for mid, m in p.broadcast.items()}
    acked_ids = {ids[0] for p in publishers for ids in p.acked.values()}
    assert broadcast.keys() - acked_ids, "nothing was queued at SIGTERM: the test proves nothing"

    restart(server)
    reader = await ChatClient.connect(server.ws_url, publishers[0].token)
    history = await room_history(reader)
    by_id = {m["id"]: m for m in history.values()}
    for message_id, message in broadcast.items():
        assert message_id in by_id, f"broadcast message {message['clientId']} lost"
        assert by_id[message_id]["seq"] == message["seq"]
    # A clean stop leaves no gap: numbering continues right after the last stored message.
    reader.send(type="join_room", roomId=ROOM)
    await reader.expect("room_joined")
    reader.send(type="send_message", roomId=ROOM, content="after restart", clientId="next")
    assert (await reader.expect("message_ack", clientId="next"))["seq"] == max(history) + 1
    await reader.close()
    assert server.stop() == 0


# --------------------------------------------------------------------------- disk failure


@pytest.fixture
def small_disk(tmp_path: Path) -> Iterator[Path]:
    """A 4 MB tmpfs for the data folder (needs root; the test is skipped otherwise)."""
    mount_point = tmp_path / "disk"
    mount_point.mkdir()
    result = subprocess.run(
        ["mount", "-t", "tmpfs", "-o", "size=4m", "tmpfs", str(mount_point)],
        capture_output=True,
        text=True,
    )
    if result.returncode != 0:
        pytest.skip(f"cannot mount a tmpfs here: {result.stderr.strip() or result.returncode}")
    yield mount_point
    # Lazy: the server process is killed after this fixture's teardown may start.
    subprocess.run(["umount", "-l", str(mount_point)], check=False)


def fill(path: Path) -> None:
    """Write zeros to ``path`` until the file system is full."""
    chunk = b"\0" * 65536
    fd = os.open(path, os.O_WRONLY | os.O_CREAT)
    try:
        while True:
            try:
                os.write(fd, chunk)
            except OSError:
                if len(chunk) == 1:
                    return
                chunk = chunk[: len(chunk) // 2]
    finally:
        os.close(fd)


async def wait_health(server: ServerProcess, status: int) -> httpx.Response:
    """Poll /healthz until it answers ``status`` (the writer retries with backoff)."""
    async with httpx.AsyncClient() as http:
        for _ in range(200):
            response = await http.get(server.base_url + "/healthz")
            if response.status_code == status:
                return response
            await asyncio.sleep(0.05)
    raise AssertionError(f"/healthz never answered {status}: {response.text}")


def store_healthy(server: ServerProcess) -> float:
    text = httpx.get(server.base_url + "/metrics").text
    line = next(ln for ln in text.splitlines() if ln.startswith("fastchat_store_healthy "))
    return float(line.split()[1])


@pytest.mark.sqlite_only  # a full disk under the SQLite file
async def test_full_disk_keeps_chat_live_and_acks_only_what_is_stored(small_disk, make_server):
    server = make_server(
        limits=UNLIMITED,
        storage={
            "path": str(small_disk / "chat.db"),
            "uploads_dir": str(small_disk / "uploads"),
            "queue_max": 5,
        },
    )
    alice_account, bob_account = register(server.base_url), register(server.base_url)
    alice = await ChatClient.connect(server.ws_url, alice_account["token"])
    bob = await ChatClient.connect(server.ws_url, bob_account["token"])
    for client in (alice, bob):
        client.send(type="join_room", roomId=ROOM)
        await client.expect("room_joined", roomId=ROOM)
    async with httpx.AsyncClient() as http:  # the joins' writes are committed
        assert (await http.get(server.base_url + "/healthz")).json()["queue_depth"] == 0

    filler = small_disk / "filler"
    fill(filler)
    for i in range(5):
        alice.send(type="send_message", roomId=ROOM, content=f"during {i}", clientId=f"d{i}")
    seen = [(await bob.expect("new_message"))["message"] for _ in range(5)]
    assert [m["content"] for m in seen] == [f"during {i}" for i in range(5)]  # chat is live

    health = await wait_health(server, 503)
    assert "disk full" in health.json()["storage"]
    assert store_healthy(server) == 0
    await wait_until(  # the log is read by another thread: the line may trail /healthz
        lambda: any("storage write failed" in line and "disk full" in line for line in server.log)
    )
    # The queue is bounded: with queue_max messages waiting, the next one is refused.
    alice.send(type="send_message", roomId=ROOM, content="one too many", clientId="d5")
    await alice.expect_error("overloaded")
    assert not [e for e in alice.drain() if e["type"] == "message_ack"]  # nothing acked

    filler.unlink()
    acks = [await alice.expect("message_ack", timeout=10) for _ in range(5)]
    assert [a["clientId"] for a in acks] == [f"d{i}" for i in range(5)]  # in order
    assert [a["messageId"] for a in acks] == [m["id"] for m in seen]
    await wait_health(server, 200)
    assert store_healthy(server) == 1

    history = await room_history(alice)
    assert [m["clientId"] for m in history.values()] == [f"d{i}" for i in range(5)]
    await alice.close()
    await bob.close()
    assert server.stop() == 0


@pytest.mark.sqlite_only  # garbage written over the SQLite file's pages
async def test_a_corrupt_page_is_reported_by_healthz_and_answered_cleanly(make_server):
    server = make_server()
    server.stop()  # the schema exists now
    database = server.data_dir / "chat.db"
    db = sqlite3.connect(database)
    with db:
        db.executemany(
            "INSERT INTO messages (id, room_id, seq, user_id, content, created_at)"
            " VALUES (?, 'general', ?, 'someone', ?, '2026-01-01T00:00:00.000Z')",
            [(f"m{seq:05}", seq, "x" * 300) for seq in range(1, 2001)],
        )
        page_size = db.execute("PRAGMA page_size").fetchone()[0]
        oldest = db.execute(
            "SELECT pageno FROM dbstat WHERE name = 'messages' AND pagetype = 'leaf'"
            " ORDER BY pageno LIMIT 2"
        ).fetchall()
    db.execute("PRAGMA wal_checkpoint(TRUNCATE)")  # every page in the database file itself
    db.close()
    with database.open("r+b") as raw:  # the pages of the oldest messages turn to garbage
        for (page,) in oldest:
            raw.seek((page - 1) * page_size)
            raw.write(b"\xff" * page_size)
    server.start()
    account = register(server.base_url)
    client = await ChatClient.connect(server.ws_url, account["token"])
    client.send(type="join_room", roomId=ROOM)
    await client.expect("room_joined", roomId=ROOM)  # the recent window reads fine
    client.send(type="get_room_history", roomId=ROOM, before=20, limit=10)
    failed = await client.expect_error("storage_unavailable")
    assert failed["message"] == "Storage read failed"
    health = httpx.get(server.base_url + "/healthz")
    assert health.status_code == 503 and "read failed" in health.json()["storage"]
    await wait_until(
        lambda: any("storage read messages_page failed" in line for line in server.log)
    )
    await client.close()


@pytest.mark.parametrize("seed", [1, 2])
async def test_sigkill_after_acks_loses_no_edit_delete_or_ban(make_server, seed):
    """Edits, deletes and bans are committed before they are acknowledged or broadcast."""
    rng = random.Random(seed)
    # A long flush interval: before, these were broadcast at once and written 200 ms later.
    server = make_server(limits=UNLIMITED, storage={"flush_interval_ms": 200})
    admin_name = create_account(server, "admin")
    admin_login = httpx.post(
        f"{server.base_url}/api/auth/login", json={"username": admin_name, "password": PASSWORD}
    ).json()
    admin = await ChatClient.connect(server.ws_url, admin_login["token"])
    author = register(server.base_url)
    writer = await ChatClient.connect(server.ws_url, author["token"])
    writer.send(type="join_room", roomId=ROOM)
    await writer.expect("room_joined", roomId=ROOM)
    ids = []
    for index in range(12):
        writer.send(type="send_message", roomId=ROOM, content=f"m{index}", clientId=f"c{index}")
        ids.append((await writer.expect("message_ack", clientId=f"c{index}"))["messageId"])
    victims = [register(server.base_url) for _ in range(3)]

    edited, deleted = ids[:6], ids[6:]
    for message_id in edited:
        writer.send(type="edit_message", messageId=message_id, content=f"edited {message_id}")
    for message_id in deleted:
        writer.send(type="delete_message", messageId=message_id)
    for victim in victims:
        admin.send(type="ban_user", userId=victim["user"]["id"], reason="crash test")
    wanted = rng.randint(1, len(ids))
    acked: set[str] = set()
    broadcast: set[str] = set()
    while len(acked) < wanted:
        event = await writer.next()
        if event["type"] in ("edit_ack", "delete_ack"):
            acked.add(event["data"]["messageId"])
        elif event["type"] == "message_edited":
            broadcast.add(event["data"]["message"]["id"])
        elif event["type"] == "message_deleted":
            broadcast.add(event["data"]["messageId"])
    bans_done = [(await admin.expect("moderation_done", action="ban"))["userId"] for _ in range(3)]
    server.process.kill()
    restart(server)

    reader = await ChatClient.connect(server.ws_url, author["token"])
    reader.send(type="join_room", roomId=ROOM)
    await reader.expect("room_joined", roomId=ROOM)
    by_id = {m["id"]: m for m in (await room_history(reader)).values()}
    for message_id in acked | broadcast:
        if message_id in edited:
            assert by_id[message_id]["content"] == f"edited {message_id}", "edit lost"
            assert by_id[message_id]["edited"] is True
        else:
            assert by_id[message_id].get("deleted") is True, "delete lost"
    for victim in victims:
        assert victim["user"]["id"] in bans_done
        refused = httpx.post(
            f"{server.base_url}/api/auth/login",
            json={"username": victim["user"]["username"], "password": PASSWORD},
        )
        assert refused.status_code == 403, "ban lost"
    await reader.close()
