"""A real `fastchat run` on the Redis broker, against a real redis-server: messages go out
through Redis in seq order, a Redis restart refuses sends with `unavailable` and shows in
/healthz, and the node resubscribes and goes on; `--workers` refusals."""

from __future__ import annotations

import httpx

from tests.e2e.test_durability import wait_health
from tests.support.client import joined
from tests.support.redis import RedisServer, redis_server  # noqa: F401  (a fixture)
from tests.support.server import ServerProcess, run_fastchat, write_config


async def test_room_messages_go_through_redis_in_seq_order(make_server, redis_server):  # noqa: F811
    server = make_server(broker={"kind": "redis", "url": redis_server.url})
    alice, _ = await joined(server.ws_url, server.base_url)
    bob, _ = await joined(server.ws_url, server.base_url)
    for i in range(20):
        alice.send(type="send_message", roomId="general", content=f"m{i}", clientId=f"c{i}")
    got = [(await bob.expect("new_message"))["message"] for _ in range(20)]
    assert [m["content"] for m in got] == [f"m{i}" for i in range(20)]
    seqs = [m["seq"] for m in got]
    assert seqs == list(range(seqs[0], seqs[0] + 20))
    acks = [await alice.expect("message_ack", clientId=f"c{i}") for i in range(20)]
    assert [a["seq"] for a in acks] == seqs
    health = httpx.get(server.base_url + "/healthz").json()
    assert health["broker"] == "ok" and health["status"] == "ok"
    await alice.close()
    await bob.close()


async def test_a_redis_restart_refuses_sends_then_the_node_resubscribes(
    make_server,
    redis_server: RedisServer,  # noqa: F811
):
    server = make_server(broker={"kind": "redis", "url": redis_server.url})
    alice, _ = await joined(server.ws_url, server.base_url)
    bob, _ = await joined(server.ws_url, server.base_url)
    alice.send(type="send_message", roomId="general", content="before", clientId="b")
    before = (await bob.expect("new_message"))["message"]

    redis_server.stop()
    health = await wait_health(server, 503)
    assert "redis" in health.json()["broker"]
    alice.send(type="send_message", roomId="general", content="lost", clientId="l")
    error = await alice.expect_error("unavailable")
    assert "clientId" in error["message"]

    redis_server.start()
    await wait_health(server, 200)
    alice.send(type="send_message", roomId="general", content="lost", clientId="l")  # resent
    after = (await bob.expect("new_message"))["message"]
    assert after["content"] == "lost" and after["seq"] > before["seq"]
    assert (await alice.expect("message_ack", clientId="l"))["seq"] == after["seq"]
    await alice.close()
    await bob.close()


def test_workers_are_refused_with_the_local_broker_and_with_sqlite(tmp_path):
    local = run_fastchat("-c", str(write_config(tmp_path)), "run", "--workers", "2")
    assert local.returncode == 2
    assert 'kind = "redis"' in local.stderr
    (tmp_path / "r").mkdir()
    redis = write_config(tmp_path / "r", broker={"kind": "redis"})
    shared = run_fastchat("-c", str(redis), "run", "--workers", "2")
    assert shared.returncode == 2
    assert "SQLite" in shared.stderr


def test_a_redis_broker_that_cannot_connect_stops_start_up(tmp_path):
    server = ServerProcess.configured(
        tmp_path, broker={"kind": "redis", "url": "redis://127.0.0.1:1/0", "timeout_seconds": 1}
    )
    done = run_fastchat("-c", str(server.config_path), "run")
    assert done.returncode != 0
    assert "redis" in done.stderr.lower()
