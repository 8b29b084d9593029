"""History pages served from memory: ``History.cached_page`` over a full 500-message cache;
and one past a window trimmed to the windows' total, read from SQLite.

The Chat is the real one, built by :class:`fastchat.app.App` over a temporary database;
the room's cache is filled with 500 messages so the memory pages never touch SQLite.
"""

from __future__ import annotations

import asyncio
from collections import deque
from collections.abc import Iterator
from pathlib import Path

import orjson
import pytest

from bench.support import ROOM_ID, USER_ID, bench_config, message_dict
from fastchat.app import App
from fastchat.chat import Chat, Room
from fastchat.clock import utc_now_iso
from fastchat.storage import ops

CACHE = 500
LIMIT = 50


async def _app(data_dir: Path) -> App:
    return App(bench_config(data_dir, history_cache=CACHE))


@pytest.fixture
def chat_room(loop: asyncio.AbstractEventLoop, tmp_path: Path) -> Iterator[tuple[Chat, Room]]:
    """The real Chat and its 'general' room, whose cache holds seqs 1..500."""
    app = loop.run_until_complete(_app(tmp_path))
    room = app.chat.directory.by_id[ROOM_ID]
    room.history = deque((message_dict(seq) for seq in range(1, CACHE + 1)), maxlen=CACHE)
    app.broker.open_room(ROOM_ID, CACHE)
    yield app.chat, room
    assert loop.run_until_complete(app.close(5.0)) == 0


@pytest.mark.benchmark(group="history")
def test_page_before(benchmark, chat_room: tuple[Chat, Room]) -> None:
    chat, room = chat_room
    messages, has_more = benchmark(chat.history.cached_page, room, 400, None, LIMIT)
    assert [m["seq"] for m in messages] == list(range(350, 400))
    assert has_more


@pytest.mark.benchmark(group="history")
def test_page_latest(benchmark, chat_room: tuple[Chat, Room]) -> None:
    chat, room = chat_room
    messages, has_more = benchmark(chat.history.cached_page, room, None, None, LIMIT)
    assert [m["seq"] for m in messages] == list(range(451, 501))
    assert has_more


@pytest.mark.benchmark(group="history")
def test_page_after_catch_up(benchmark, chat_room: tuple[Chat, Room]) -> None:
    """``join_room`` with ``since``: the messages missed while disconnected."""
    chat, room = chat_room
    messages, has_more = benchmark(chat.history.cached_page, room, None, 450, LIMIT)
    assert [m["seq"] for m in messages] == list(range(451, 501))
    assert not has_more


@pytest.mark.benchmark(group="history")
def test_page_before_encoded(benchmark, chat_room: tuple[Chat, Room]) -> None:
    """What a ``get_room_history`` reply costs in all: the page plus its encoding."""
    chat, room = chat_room

    def reply() -> bytes:
        messages, has_more = chat.history.cached_page(room, 400, None, LIMIT)
        return orjson.dumps(
            {
                "type": "room_history",
                "data": {"roomId": room.id, "messages": messages, "hasMore": has_more},
            }
        )

    payload = benchmark(reply)
    assert len(orjson.loads(payload)["data"]["messages"]) == LIMIT


@pytest.fixture
def stored_room(loop: asyncio.AbstractEventLoop, tmp_path: Path) -> Iterator[tuple[Chat, Room]]:
    """The real Chat and 'general' with 500 stored messages, its window trimmed to the
    newest one (as the windows' total leaves a room nobody wrote to lately)."""
    app = loop.run_until_complete(_app(tmp_path))
    room = app.chat.directory.by_id[ROOM_ID]

    async def fill() -> None:
        at = utc_now_iso()
        await app.writer.execute(
            ops.insert_user(
                id=USER_ID, username="alice_wonder", email=None, password_hash="x", created_at=at
            )
        )
        for seq in range(1, CACHE + 1):
            message = message_dict(seq)
            app.writer.submit(
                ops.insert_message(
                    id=message["id"],
                    room_id=ROOM_ID,
                    seq=seq,
                    user_id=USER_ID,
                    content=message["content"],
                    client_id=message["clientId"],
                    created_at=at,
                )
            )
        await app.writer.execute(ops.touch_last_seen(USER_ID, at))  # after the inserts
        await app.chat.history.load(room)

    loop.run_until_complete(fill())
    assert room.history is not None
    while len(room.history) > 1:
        room.history.popleft()
    app.chat.history._trimmed.add(room.id)
    yield app.chat, room
    assert loop.run_until_complete(app.close(5.0)) == 0


@pytest.mark.benchmark(group="history")
def test_page_from_storage(
    benchmark, loop: asyncio.AbstractEventLoop, stored_room: tuple[Chat, Room]
) -> None:
    """A page past a trimmed window: one SQLite read, its rows made message dicts."""
    chat, room = stored_room
    assert chat.history.cached_page(room, 400, None, LIMIT) is None
    messages, has_more = benchmark(
        lambda: loop.run_until_complete(chat.history.page(room, 400, None, LIMIT))
    )
    assert [m["seq"] for m in messages] == list(range(350, 400))
    assert has_more
