"""Page helpers shared by the browser tests: who is signed in, and the common gestures."""

from __future__ import annotations

import json
import re
import struct
import time
import uuid
import zlib
from collections.abc import Callable
from dataclasses import dataclass, field

import websocket
from playwright.sync_api import Locator, Page, expect

from tests.support.accounts import register


@dataclass
class Person:
    """A signed-in user with their own browser context and page."""

    page: Page
    username: str
    user_id: str
    errors: list[str] = field(default_factory=list)


SignUp = Callable[..., Person]
Pair = tuple[Person, Person, str]  # Alice, Bob, and the room they are both in


def unique_name(prefix: str) -> str:
    """A name that no other test uses: prefix plus 6 hex digits."""
    return f"{prefix}_{uuid.uuid4().hex[:6]}"


def create_room(person: Person, name: str) -> None:
    """Create a public room through the sidebar form; the creator lands in it."""
    page = person.page
    page.click("#create-room summary")
    page.fill("#room-name", name)
    page.fill("#room-description", "for the tests")
    page.click("#create-room-form button[type=submit]")
    expect(page.locator("#current-room-name")).to_have_text(f"# {name}")


def open_room(person: Person, name: str) -> None:
    """Click a room in the sidebar and wait until it is the current one."""
    person.page.locator("#room-list .room", has_text=name).click()
    expect(person.page.locator("#current-room-name")).to_have_text(f"# {name}")


def send(person: Person, text: str) -> None:
    """Type a message and press Enter."""
    person.page.fill("#message-input", text)
    person.page.press("#message-input", "Enter")


def message(person: Person, text: str) -> Locator:
    """The message whose content is exactly `text`."""
    exact = re.compile(f"^{re.escape(text)}$")
    return person.page.locator("#messages .message").filter(
        has=person.page.locator(".content", has_text=exact)
    )


def post_as_bot(server, room_id: str, count: int) -> None:
    """Register a bot over HTTP and post `count` messages ("m01"…) to a room over WebSocket."""
    token = register(server.base_url, unique_name("bot"))["token"]
    socket = websocket.create_connection(server.ws_url, timeout=10)
    try:
        socket.send(json.dumps({"type": "authenticate", "token": token}))
        socket.send(json.dumps({"type": "join_room", "roomId": room_id}))
        acked = 0
        for n in range(1, count + 1):
            content = f"m{n:02d}"
            socket.send(
                json.dumps(
                    {
                        "type": "send_message",
                        "roomId": room_id,
                        "content": content,
                        "clientId": content,
                    }
                )
            )
            while acked < n:
                frame = json.loads(socket.recv())
                assert frame["type"] != "error", frame
                acked += frame["type"] == "message_ack"
            if n >= 30:
                time.sleep(0.06)  # pacing, not waiting: past the burst, stay under 20 msg/s
    finally:
        socket.close()


def solid_png(width: int, height: int) -> bytes:
    """A valid PNG of one colour, `width` x `height` pixels."""

    def chunk(kind: bytes, data: bytes) -> bytes:
        body = kind + data
        return struct.pack(">I", len(data)) + body + struct.pack(">I", zlib.crc32(body))

    rows = b"".join(b"\x00" + b"\x30\x80\xd0" * width for _ in range(height))
    header = struct.pack(">IIBBBBB", width, height, 8, 2, 0, 0, 0)
    return (
        b"\x89PNG\r\n\x1a\n"
        + chunk(b"IHDR", header)
        + chunk(b"IDAT", zlib.compress(rows, 9))
        + chunk(b"IEND", b"")
    )
