"""A WebSocket echo server on fastchat's own HTTP handler, upgrade and :class:`Connection`.

The target of the Autobahn|Testsuite conformance run (docs/conformance.md): everything
between the socket and the chat is the server's code; only the chat session is swapped
for :class:`Echo`, which sends every text message back. Binary messages are refused with
1003 as in the chat. Size limits are raised to what the suite sends (16 MiB messages,
65,537 fragments).

    python -m fastchat.testing.echo --port 9001 [--compression shared|dedicated|off]

The first line on stdout is ``listening on ws://HOST:PORT`` (``--port 0`` picks a port).
"""

from __future__ import annotations

import argparse
import asyncio
import signal
import typing

import uvloop

from fastchat.config import Compression, ServerConfig, WebSocketConfig
from fastchat.fanout.hub import Hub
from fastchat.metrics import Metrics
from fastchat.web.http import BodySink, HttpConnections, Request, Response, error_response
from fastchat.ws.connection import Connection
from fastchat.ws.upgrade import accept

MAX_MESSAGE_BYTES = 16 * 1024 * 1024
# Case 9.3.1 sends 4 MiB in 64-byte fragments: 65,536 of them, and then the empty final
# frame that Autobahn's fragmenter adds when the payload divides evenly.
MAX_FRAGMENTS = 65_537


class Echo:
    """The chat session's stand-in (a :class:`~fastchat.ws.connection.MessageHandler`)."""

    def __init__(self, hub: Hub):
        self._hub = hub

    def on_open(self, conn: Connection) -> None:
        pass

    def on_text(self, conn: Connection, text: str) -> None:
        self._hub.send(conn, text.encode())

    def on_close(self, conn: Connection) -> None:
        pass


class EchoRouter:
    """A :class:`fastchat.web.http.Router` that upgrades every GET and answers 404 otherwise."""

    def __init__(self, config: WebSocketConfig):
        self._config = config
        self.metrics = Metrics()
        self.hub = Hub(config, self.metrics)
        self._echo = Echo(self.hub)

    def body_limit(self, request: Request) -> int:
        return 0

    def body_sink(self, request: Request) -> BodySink | None:
        return None

    async def handle(self, request: Request, sink: BodySink | None) -> Response:
        return error_response(404, "Not found: this is a WebSocket echo server")

    def on_upgrade(
        self, request: Request, transport: asyncio.Transport, tail: bytes
    ) -> Response | None:
        if request.method != "GET":
            return error_response(405, "WebSocket upgrades must use GET")
        return accept(
            request,
            transport,
            tail,
            registry=self.hub,
            handler=self._echo,
            config=self._config,
            metrics=self.metrics,
        )


def echo_config(compression: Compression) -> WebSocketConfig:
    """The server's WebSocket settings with the suite's size limits."""
    return WebSocketConfig(
        compression=compression,
        max_message_bytes=MAX_MESSAGE_BYTES,
        max_fragments=MAX_FRAGMENTS,
    )


async def serve(host: str, port: int, compression: Compression) -> None:
    """Serve until SIGINT or SIGTERM."""
    loop = asyncio.get_running_loop()
    router = EchoRouter(echo_config(compression))
    server_config = ServerConfig(host=host, port=port)
    connections = HttpConnections(router, server_config)
    server = await loop.create_server(connections.protocol, host=host, port=port)
    bound_host, bound_port = server.sockets[0].getsockname()[:2]
    print(f"listening on ws://{bound_host}:{bound_port}", flush=True)
    stop = asyncio.Event()
    for signum in (signal.SIGINT, signal.SIGTERM):
        loop.add_signal_handler(signum, stop.set)
    await stop.wait()
    server.close()


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(prog="python -m fastchat.testing.echo", description=__doc__)
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--port", type=int, default=9001)
    parser.add_argument("--compression", choices=typing.get_args(Compression), default="shared")
    args = parser.parse_args(argv)
    uvloop.run(serve(args.host, args.port, args.compression))


if __name__ == "__main__":
    main()
