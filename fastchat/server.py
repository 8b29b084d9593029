"""Server lifecycle: uvloop, listen, serve until a signal, ordered shutdown.

Shutdown order: stop accepting → close idle HTTP connections → close every WebSocket with
1001 (going away) → flush the write-behind queue completely → close the database.
"""

from __future__ import annotations

import asyncio
import gc
import logging
import signal
import ssl

import uvloop

from fastchat.app import App
from fastchat.config import Config
from fastchat.errors import CloseCode
from fastchat.web.api import Api
from fastchat.web.http import HttpConnections
from fastchat.ws.keepalive import Keepalive

log = logging.getLogger("fastchat")

# Every message leaves a few objects alive until its batch commits: with CPython's default
# first threshold (700) they are all traced twice and promoted to the oldest generation,
# whose full collections then walk every object of the process. Measured saturating a
# 100-member room: ~17 % of the loop in the collector, 2 full collections a second.
_GC_THRESHOLDS = (10_000, 10, 10)


def run(config: Config, tls: ssl.SSLContext | None = None, *, reuse_port: bool = False) -> int:
    """Run the server until SIGINT/SIGTERM; returns the process exit code.

    With ``tls`` (see :func:`fastchat.tls.server_context`) the port speaks https and wss;
    with ``reuse_port`` it shares the port with the other workers of ``--workers N``.
    """
    return uvloop.run(serve(config, tls, reuse_port=reuse_port))


async def serve(
    config: Config, tls: ssl.SSLContext | None = None, *, reuse_port: bool = False
) -> int:
    loop = asyncio.get_running_loop()
    app = App(config)
    await app.start()
    api = Api(app)
    http_connections = HttpConnections(api, config.server)
    server = await loop.create_server(
        http_connections.protocol,
        host=config.server.host,
        port=config.server.port,
        reuse_address=True,
        reuse_port=reuse_port,
        backlog=4096,
        ssl=tls,
        # a TLS handshake is part of the request head's time budget
        ssl_handshake_timeout=config.server.header_timeout_seconds if tls else None,
    )
    host, port = server.sockets[0].getsockname()[:2]
    scheme = "https" if tls else "http"
    url = f"{scheme}://{host}:{port}" if ":" not in host else f"{scheme}://[{host}]:{port}"
    # Handlers first: whoever reads the line below may signal the server at once.
    stop = asyncio.Event()
    for signum in (signal.SIGINT, signal.SIGTERM):
        loop.add_signal_handler(signum, stop.set)
    log.info("fastchat listening on %s", url)
    # What exists now (modules, configuration, rooms and users loaded at start) lives as
    # long as the process: keep it out of every later collection.
    gc.freeze()
    gc.set_threshold(*_GC_THRESHOLDS)

    ws_config = config.websocket
    keepalive = Keepalive(
        app.hub.connections, ws_config.ping_interval_seconds, ws_config.ping_timeout_seconds
    )
    await stop.wait()
    log.info("shutting down")

    server.close()
    keepalive.stop()
    http_connections.close_idle()
    closing = [conn.transport.wait_disconnected() for conn in app.hub.connections if conn.transport]
    for conn in list(app.hub.connections):
        conn.close(CloseCode.GOING_AWAY, "server shutting down")
    app.hub.flush()
    if closing:
        await asyncio.wait(
            [asyncio.ensure_future(c) for c in closing],
            timeout=config.server.shutdown_timeout_seconds,
        )
    lost = await app.close(config.server.shutdown_timeout_seconds)
    if lost:
        log.error("%d storage operations could not be written before exit", lost)
        return 1
    log.info("stopped cleanly")
    return 0
