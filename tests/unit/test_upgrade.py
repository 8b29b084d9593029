"""The hand-over of an upgraded HTTP socket to picows (``fastchat.ws.upgrade``), on a real
uvloop loop and a real loopback socket: the WebSocket works, and nothing keeps the HTTP
protocol object of the socket alive once picows owns it (it would cost every idle
WebSocket a few hundred bytes)."""

from __future__ import annotations

import asyncio
import gc

import orjson
import uvloop

from fastchat.config import ServerConfig, WebSocketConfig
from fastchat.metrics import Metrics
from fastchat.web.http import (
    BodySink,
    HttpConnections,
    HttpProtocol,
    Request,
    Response,
    error_response,
)
from fastchat.ws.connection import Connection
from fastchat.ws.peer import PLAIN, Peer
from fastchat.ws.upgrade import hand_over, raw_request
from tests.support.client import ChatClient

WS_CONFIG = WebSocketConfig()


class Upgrader:
    """A router that upgrades every request; also its connections' registry and handler,
    keeping the texts they receive."""

    def __init__(self) -> None:
        self.texts: asyncio.Queue[str] = asyncio.Queue()

    def body_limit(self, request: Request) -> int:
        return 0

    def body_sink(self, request: Request) -> BodySink | None:
        return None

    async def handle(self, request: Request, sink: BodySink | None) -> Response:
        return error_response(404, "Not found")

    def on_upgrade(
        self, request: Request, transport: asyncio.Transport, tail: bytes
    ) -> Response | None:
        connection = Connection(
            self, self, WS_CONFIG, Metrics(), client=request.client, compress=PLAIN, deflater=None
        )
        hand_over(transport, raw_request(request), tail, WS_CONFIG, connection, None)
        return None

    def opened(self, conn: Peer) -> None: ...
    def closing(self, conn: Peer) -> None: ...
    def closed(self, conn: Peer) -> None: ...
    def on_open(self, conn: Connection) -> None: ...
    def on_close(self, conn: Connection) -> None: ...

    def on_text(self, conn: Connection, text: str) -> None:
        self.texts.put_nowait(text)


def http_protocols() -> int:
    """How many exist; no collection first: one must be freed at once, not by the collector."""
    return sum(type(o) is HttpProtocol for o in gc.get_objects())


async def upgrade_then_count() -> tuple[int, int, dict]:
    """HTTP protocols alive before and after a WebSocket is upgraded, and what it received."""
    upgrader = Upgrader()
    server = await asyncio.get_running_loop().create_server(
        HttpConnections(upgrader, ServerConfig()).protocol, "127.0.0.1", 0
    )
    port = server.sockets[0].getsockname()[1]
    gc.collect()  # only garbage from before this test: the count after must not need one
    before = http_protocols()
    client = await ChatClient.open(f"ws://127.0.0.1:{port}/ws")
    try:
        client.send(type="ping")
        received = orjson.loads(await asyncio.wait_for(upgrader.texts.get(), 5))
        return before, http_protocols(), received
    finally:
        await client.close()
        server.close()


def test_an_upgraded_socket_keeps_no_http_protocol() -> None:
    before, after, received = uvloop.run(upgrade_then_count())
    assert received == {"type": "ping"}  # the bytes now reach picows and the connection
    assert after == before
