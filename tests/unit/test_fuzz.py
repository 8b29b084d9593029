"""Fuzzing the WebSocket message handler in-process: the real App, a fake socket.

Each example opens a fresh fake connection, authenticates it (as an admin, so moderation
paths are reachable), joins ``general``, feeds ``Sessions.on_text`` one input and lets
the write-behind writer commit. The handler must never raise, must answer every input
(an event or error for that connection, or a clean close), and must never answer with
the catch-all code ``"error"``, which marks an internal error.
"""

from __future__ import annotations

import asyncio
import json
import uuid
from collections.abc import Iterator
from dataclasses import dataclass, field
from typing import Any

import orjson
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from fastchat.app import App
from fastchat.clock import utc_now_iso
from fastchat.config import load
from fastchat.protocol import COMMAND_TYPES
from fastchat.storage import ops
from tests.support.frames import split_frames
from tests.support.server import write_config

FUZZ = settings(
    max_examples=200,
    deadline=None,
    suppress_health_check=[HealthCheck.too_slow, HealthCheck.filter_too_much],
)
HINTS = {"typing_start", "typing_stop"}  # fire-and-forget: nothing goes back to the sender


class FakeConnection:
    """Stands in for :class:`fastchat.ws.connection.Connection`: records what the hub
    would have written to the socket, and the close."""

    def __init__(self) -> None:
        self.closed = False
        self.paused = False
        self.compress = 0
        self.deflater = None
        self.out: bytes | list[bytes] | None = None
        self.user_id: str | None = None
        self.rooms: list[Any] = []
        self.session: object = None
        self.client = "127.0.0.1"
        self.written: list[bytes] = []
        self.close_code: int | None = None

    def deliver(self, blob: bytes) -> None:
        if not self.closed:
            self.written.append(blob)

    def flush(self) -> None:
        out, self.out = self.out, None
        if out is not None and not self.closed:
            self.written.append(out if type(out) is bytes else b"".join(out))

    def hold(self, blob: bytes) -> None:
        self.written.append(blob)

    def close(self, code: int, reason: str = "", *, slow: bool = False) -> None:
        if self.closed:
            return
        if not slow:
            self.flush()
        self.closed = True
        self.close_code = code

    def events(self) -> list[dict[str, Any]]:
        """Decode the unmasked text frames written so far."""
        return [orjson.loads(frame.payload) for frame in split_frames(b"".join(self.written))]


@dataclass
class Harness:
    loop: asyncio.AbstractEventLoop
    app: App
    token: str
    user_ids: list[str]
    message_ids: list[str] = field(default_factory=list)

    def settle(self) -> None:
        """Let the writer commit everything queued and deliver its callbacks (acks)."""
        barrier = ops.touch_last_seen("nobody", utc_now_iso())  # FIFO: commits last
        self.loop.run_until_complete(self.app.writer.execute(barrier))
        self.app.hub.flush()

    def exchange(self, text: str) -> FakeConnection:
        sessions, hub = self.app.sessions, self.app.hub
        conn = FakeConnection()
        hub.connections.add(conn)  # type: ignore[arg-type]
        sessions.on_open(conn)  # type: ignore[arg-type]
        sessions.on_text(conn, orjson.dumps({"type": "authenticate", "token": self.token}).decode())  # type: ignore[arg-type]
        sessions.on_text(conn, '{"type": "join_room", "roomId": "general"}')  # type: ignore[arg-type]
        hub.flush()
        assert conn.close_code is None, "the fuzz account could not log in"
        assert [e["type"] for e in conn.events()][-1] == "room_joined", conn.events()
        conn.written.clear()
        try:
            sessions.on_text(conn, text)  # type: ignore[arg-type]
            self.settle()
        finally:
            sessions.on_close(conn)  # type: ignore[arg-type]
            hub.connections.discard(conn)  # type: ignore[arg-type]
            conn.closed = True
        for event in conn.events():
            if event["type"] == "new_message":
                self.message_ids.append(event["data"]["message"]["id"])
        return conn


@pytest.fixture(scope="module")
def harness(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Harness]:
    directory = tmp_path_factory.mktemp("fuzz")
    config = load(
        write_config(
            directory,
            limits={"messages_per_second": 1_000_000.0, "burst": 1_000_000},
            storage={"flush_interval_ms": 0, "synchronous": "normal"},
        )
    )
    loop = asyncio.new_event_loop()

    async def build() -> App:
        return App(config)

    app = loop.run_until_complete(build())
    user_ids = [str(uuid.uuid4()), str(uuid.uuid4())]
    for user_id, role in zip(user_ids, ("admin", "user"), strict=True):
        op = ops.insert_user(
            id=user_id,
            username=f"fuzz_{role}",
            email=f"{role}@example.com",
            password_hash="x",
            role=role,
            created_at=utc_now_iso(),
        )
        loop.run_until_complete(app.writer.execute(op))
    harness = Harness(loop, app, app.tokens.issue(user_ids[0], "fuzz_admin", "admin"), user_ids)
    yield harness
    assert loop.run_until_complete(app.close(5)) == 0
    loop.close()


def check(conn: FakeConnection, request_type: object = None) -> None:
    events = conn.events()
    assert events or conn.close_code is not None or request_type in HINTS, "no answer"
    internal = [e for e in events if e["type"] == "error" and e["data"]["code"] == "error"]
    assert internal == [], internal


json_values = st.recursive(
    st.none() | st.booleans() | st.integers() | st.floats() | st.text(max_size=20),
    lambda children: (
        st.lists(children, max_size=4) | st.dictionaries(st.text(max_size=10), children, max_size=4)
    ),
    max_leaves=12,
)


@FUZZ
@given(data=st.binary(max_size=300) | st.text(max_size=300).map(str.encode))
def test_arbitrary_text_never_breaks_the_handler(harness: Harness, data: bytes) -> None:
    # The connection layer only hands over valid UTF-8; the handler sees any such text.
    check(harness.exchange(data.decode("utf-8", errors="replace")))


@FUZZ
@given(value=json_values)
def test_arbitrary_json_never_breaks_the_handler(harness: Harness, value: Any) -> None:
    check(harness.exchange(json.dumps(value)))


FIELDS = (
    "token", "roomId", "since", "content", "messageType", "replyTo", "clientId", "fileId",
    "messageId", "limit", "before", "after", "targetUserId", "userId", "name", "description",
    "isPrivate", "reason", "durationSeconds", "role",
)  # fmt: skip


@st.composite
def commands(draw: st.DrawFn, harness: Harness) -> dict[str, Any]:
    """Objects shaped like real commands: real types, real field names, random values."""
    known = st.sampled_from(
        ["general", "random", "tech", *harness.user_ids, *harness.message_ids[-20:]]
    )
    value = (
        known
        | st.text(max_size=80)
        | st.integers(min_value=-(2**70), max_value=2**70)
        | st.sampled_from([0, 1, 50, 200, 201, 31_536_000, 31_536_001])
        | st.sampled_from(["text", "image", "file", "user", "moderator", "admin", "x" * 2001])
        | st.booleans()
        | st.none()
        | st.floats()
        | st.lists(st.integers(), max_size=2)
    )
    names = draw(st.lists(st.sampled_from(FIELDS), unique=True, max_size=6))
    command: dict[str, Any] = {name: draw(value) for name in names}
    command["type"] = draw(st.sampled_from(sorted(COMMAND_TYPES)) | st.text(max_size=12))
    return command


@FUZZ
@given(data=st.data())
def test_command_shaped_input_never_breaks_the_handler(harness: Harness, data: Any) -> None:
    command = data.draw(commands(harness))
    check(harness.exchange(json.dumps(command)), command["type"])
