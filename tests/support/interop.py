"""Clients of the ``websockets`` library (for interop tests) and chat-like test content."""

from __future__ import annotations

import asyncio
import random
import string
from typing import Any

import orjson
from websockets.asyncio.client import ClientConnection
from websockets.asyncio.client import connect as websockets_connect

from tests.support.server import ServerProcess
from tests.support.waiting import is_event


def varied_text(length: int, seed: int) -> str:
    """Chat-like content that compresses (words repeat) but is not trivially uniform."""
    rng = random.Random(seed)
    words = ["".join(rng.choices(string.ascii_lowercase, k=rng.randint(2, 9))) for _ in range(40)]
    text = ""
    while len(text) < length:
        text += rng.choice(words) + " "
    return text[:length]


async def library_member(server: ServerProcess, token: str, **kwargs: Any) -> ClientConnection:
    """A ``websockets`` library client, authenticated and in general."""
    ws = await websockets_connect(server.ws_url, **kwargs)
    await library_expect(ws, "connection_established")
    await ws.send(orjson.dumps({"type": "authenticate", "token": token}).decode())
    await library_expect(ws, "authenticated")
    await ws.send(orjson.dumps({"type": "join_room", "roomId": "general"}).decode())
    await library_expect(ws, "room_joined", roomId="general")
    return ws


async def library_expect(
    ws: ClientConnection, event_type: str, timeout: float = 5.0, **match: Any
) -> dict[str, Any]:
    async with asyncio.timeout(timeout):
        while True:
            message = orjson.loads(await ws.recv())
            if is_event(message, event_type, match):
                return message["data"]
