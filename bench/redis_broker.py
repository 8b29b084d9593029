"""The Redis broker's own cost: messages/s sequenced and delivered through a real redis-server,
and Redis' CPU per message.

Two brokers on two hubs in one process play two nodes with one member each; node A keeps
``--window`` messages in flight (released by its own delivery, as the saturated fan-out
load does), both members receive every message. Redis' CPU comes from INFO before/after.

    .venv/bin/python -m bench.redis_broker --messages 50000 --window 500
"""

from __future__ import annotations

import argparse
import asyncio
import tempfile
import time
from pathlib import Path

import redis.asyncio as aioredis
import uvloop

from fastchat.config import BrokerConfig, WebSocketConfig
from fastchat.fanout.hub import Hub
from fastchat.fanout.redis_broker import RedisBroker
from fastchat.metrics import Metrics
from tests.support.redis import RedisServer
from tests.unit.test_hub import member


async def redis_cpu(url: str) -> float:
    client = aioredis.from_url(url)
    try:
        info = await client.info("cpu")
        return float(info["used_cpu_user"]) + float(info["used_cpu_sys"])
    finally:
        await client.aclose()


async def measure(url: str, messages: int, window: int) -> None:
    nodes = []
    for _ in range(2):
        hub = Hub(WebSocketConfig(compression="off", coalesce_ms=0), Metrics())
        broker = RedisBroker(hub, BrokerConfig(kind="redis", url=url), gap=0)
        hub.watcher = broker
        room = broker.open_room("bench", 0)
        await broker.start()
        nodes.append((hub, broker, room, member(hub, room, len(nodes))))
    await asyncio.sleep(0.2)  # both subscriptions in place
    (_, origin, room, _), (_, _, _, far) = nodes
    done = asyncio.get_running_loop().create_future()
    sent = 0
    acked = 0

    def then(error: BaseException | None, message: dict, *_: object) -> None:
        nonlocal acked, sent
        assert error is None, error
        acked += 1
        if sent < messages:
            send()
        elif acked == messages and not done.done():
            done.set_result(None)

    def send() -> None:
        nonlocal sent
        sent += 1
        message = {"id": str(sent), "seq": 0, "userId": "u", "clientId": None, "content": "x" * 100}
        origin.publish_message(room, message, then)

    cpu_before = await redis_cpu(url)
    started = time.perf_counter()
    for _ in range(window):
        send()
    await done
    while far.raw.bytes < messages * 100:  # the far node delivered them all
        await asyncio.sleep(0.001)
    elapsed = time.perf_counter() - started
    cpu = await redis_cpu(url) - cpu_before
    print(
        f"{messages} messages, window {window}: {messages / elapsed:,.0f} msg/s sequenced and "
        f"delivered on both nodes; Redis CPU {cpu / messages * 1e6:.1f} µs per message"
    )
    for _, broker, _, _ in nodes:
        await broker.close()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--messages", type=int, default=50_000)
    parser.add_argument("--window", type=int, default=500)
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as directory:
        server = RedisServer(Path(directory)).start()
        try:
            uvloop.run(measure(server.url, args.messages, args.window))
        finally:
            server.stop()


if __name__ == "__main__":
    main()
