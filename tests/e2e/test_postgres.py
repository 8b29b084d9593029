"""PostgreSQL going away under a running server: fan-out goes on, acks wait for the commit
and then resume in order, ``overloaded`` past the queue bound, /healthz says storage is down.

(The crash test and the rest of the e2e suite run on PostgreSQL through ``make_server``.)
"""

from __future__ import annotations

import asyncio
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest

from tests.support.client import joined
from tests.support.postgres import PostgresCluster
from tests.support.server import ServerProcess, run_fastchat
from tests.support.waiting import wait_until

ROOM = "general"
QUEUE_MAX = 12


@pytest.fixture
def pg_server(tmp_path: Path, own_postgres: PostgresCluster) -> Iterator[ServerProcess]:
    """A server on a database of the test's own PostgreSQL, with a small write queue."""
    server = ServerProcess.configured(
        tmp_path,
        storage={"backend": "postgres", "dsn": own_postgres.new_database(),
                 "queue_max": QUEUE_MAX},
        limits={"messages_per_second": 1_000_000.0, "burst": 1_000_000},
    )  # fmt: skip
    yield server.start()
    server.kill()


def health(server: ServerProcess) -> httpx.Response:
    return httpx.get(f"{server.base_url}/healthz", timeout=5)


async def test_postgres_restart_delays_acks_and_loses_nothing(
    pg_server: ServerProcess, own_postgres: PostgresCluster
) -> None:
    sender, _ = await joined(pg_server.ws_url, pg_server.base_url)
    reader, _ = await joined(pg_server.ws_url, pg_server.base_url)
    sender.send(type="send_message", roomId=ROOM, content="before", clientId="c0")
    await sender.expect("message_ack", clientId="c0")
    await reader.expect("new_message")

    await asyncio.to_thread(own_postgres.stop)
    sender.send(type="send_message", roomId=ROOM, content="first", clientId="c1")
    await reader.expect("new_message")  # fan-out does not wait for the database
    await wait_until(lambda: health(pg_server).status_code == 503, timeout=10)
    body = health(pg_server).json()
    assert body["status"] == "degraded" and body["storage"] != "ok"

    # The queue fills up to its bound; past it, sends are refused with a clear code.
    accepted = ["c1"]
    for index in range(2, QUEUE_MAX + 5):
        sender.send(type="send_message", roomId=ROOM, content=f"m{index}", clientId=f"c{index}")
    refused = await sender.expect_error("overloaded")
    assert refused["type"] == "send_message"
    broadcast = []
    while len(broadcast) < QUEUE_MAX - 1:
        message = (await reader.expect("new_message"))["message"]
        if message["clientId"] != "c1":
            broadcast.append(message)
    accepted += [m["clientId"] for m in broadcast]
    assert len(accepted) == QUEUE_MAX
    sender.drain()
    acked = [e for e in sender.seen if e["type"] == "message_ack"]
    assert [ack["data"]["clientId"] for ack in acked] == ["c0"]  # nothing acked since

    await asyncio.to_thread(own_postgres.start)
    acks = [await sender.expect("message_ack", timeout=15) for _ in accepted]
    assert [ack["clientId"] for ack in acks] == accepted  # in the order they were sent
    assert [ack["seq"] for ack in acks] == sorted(ack["seq"] for ack in acks)
    await wait_until(lambda: health(pg_server).status_code == 200, timeout=10)

    sender.send(type="get_room_history", roomId=ROOM, limit=100)
    history = await sender.expect("room_history", roomId=ROOM)
    stored = [m["clientId"] for m in history["messages"]]
    assert stored == ["c0", *accepted]
    await sender.close()
    await reader.close()
    assert pg_server.stop() == 0


def test_backend_and_dsn_are_validated_at_start(tmp_path: Path) -> None:
    for storage, message in [
        ('backend = "mysql"', "'storage.backend' must be one of 'sqlite', 'postgres'"),
        ('backend = "postgres"\ndsn = "mysql://x"', "'storage.dsn' must be a postgresql:// URL"),
    ]:
        path = tmp_path / "config.toml"
        path.write_text(f"[storage]\n{storage}\n")
        result = run_fastchat("run", "-c", str(path))
        assert result.returncode == 2, result.stderr
        assert message in result.stderr and "Traceback" not in result.stderr


def test_unreachable_postgres_stops_start_up_with_a_clear_message(tmp_path: Path) -> None:
    path = tmp_path / "config.toml"
    path.write_text('[storage]\nbackend = "postgres"\ndsn = "postgresql://x@127.0.0.1:1/x"\n')
    result = run_fastchat("run", "-c", str(path))
    assert result.returncode == 2  # as every storage that cannot start (test_config_startup)
    assert "fastchat: cannot start: postgres: OperationalError" in result.stderr
    assert "Traceback" not in result.stderr
