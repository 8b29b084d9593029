"""The hub's fan-out to a 1,000-member room, against a naive per-recipient loop.

The hub and the Connections are real; only the socket under each Connection is fake
(:class:`~tests.support.transports.CountingTransport` counts bytes), so these numbers are the
server's own CPU per broadcast. The cork benchmarks then show what one write per connection per
loop iteration saves on a real socket.
"""

from __future__ import annotations

import asyncio
import socket
from collections.abc import Callable, Iterator
from typing import Any

import orjson
import pytest

from bench.support import ROOM_ID, ROOM_SIZE, make_members, message_dict, new_message_event
from fastchat.config import WebSocketConfig
from fastchat.fanout.hub import Hub, Room
from fastchat.metrics import Metrics
from fastchat.ws.connection import Connection
from fastchat.ws.frames import build_frame
from fastchat.ws.peer import DEDICATED, PLAIN, SHARED

MODES = {"plain": PLAIN, "shared": SHARED, "dedicated": DEDICATED}
CORK_FRAMES = 50

RoomFactory = Callable[[int], tuple[Hub, Room, list[Connection]]]


def _flush(loop: asyncio.AbstractEventLoop, hub: Hub, room: Room) -> None:
    """Flush, then run the loop until the round reached every member (128 per step)."""
    hub.flush()
    while room.writing:
        loop.run_until_complete(asyncio.sleep(0))


async def _hub(metrics: Metrics) -> Hub:
    return Hub(WebSocketConfig(compression="shared"), metrics)


@pytest.fixture
def make_room(loop: asyncio.AbstractEventLoop) -> RoomFactory:
    """Build a Hub with one room of ROOM_SIZE members, each compressing as ``compress``."""

    def make(compress: int) -> tuple[Hub, Room, list[Connection]]:
        metrics = Metrics()
        hub = loop.run_until_complete(_hub(metrics))
        room = hub.open_room(ROOM_ID)
        members = make_members(hub, metrics, compress=compress)
        for conn in members:
            hub.enter(room, conn)
        return hub, room, members

    return make


def _events(count: int) -> list[dict[str, Any]]:
    return [{"type": "new_message", "data": {"message": message_dict(seq)}} for seq in range(count)]


def _assert_same_bytes(members: list[Connection], frames: list[bytes]) -> None:
    """Every member got the frames of one round in a single write."""
    expected = b"".join(frames)
    for conn in members:
        raw: Any = conn.raw
        assert raw.writes >= 1
        assert raw.bytes == raw.writes * len(expected)
        assert raw.last == expected


# --- the hub --------------------------------------------------------------------------------


@pytest.mark.benchmark(group="fanout-1msg-1000")
@pytest.mark.parametrize("mode", MODES)
def test_hub_publish_1(
    benchmark, loop: asyncio.AbstractEventLoop, make_room: RoomFactory, mode: str
) -> None:
    hub, room, members = make_room(MODES[mode])
    (event,) = _events(1)

    def broadcast() -> None:
        hub.publish(room, orjson.dumps(event))
        _flush(loop, hub, room)

    benchmark(broadcast)
    assert len(room.conns) == ROOM_SIZE
    if mode == "plain":
        _assert_same_bytes(members, [build_frame(orjson.dumps(event))])
    else:
        assert all(conn.raw.last[0] & 0x40 for conn in members)  # type: ignore[union-attr]


@pytest.mark.benchmark(group="fanout-1msg-1000")
def test_hub_publish_typing_excluding_sender(
    benchmark, loop: asyncio.AbstractEventLoop, make_room: RoomFactory
) -> None:
    """The slow path: a droppable event that skips the sender's connection."""
    hub, room, members = make_room(PLAIN)
    sender = members[0]
    payload = orjson.dumps(
        {"type": "user_typing", "data": {"userId": "user-0", "roomId": ROOM_ID, "typing": True}}
    )

    def broadcast() -> None:
        hub.publish(room, payload, droppable=True, exclude=(sender,))
        _flush(loop, hub, room)

    benchmark(broadcast)
    assert sender.raw.writes == 0  # type: ignore[union-attr]
    _assert_same_bytes(members[1:], [build_frame(payload)])


@pytest.mark.benchmark(group="fanout-50msg-1000")
@pytest.mark.parametrize("mode", ["plain", "shared"])
def test_hub_publish_50(
    benchmark, loop: asyncio.AbstractEventLoop, make_room: RoomFactory, mode: str
) -> None:
    hub, room, members = make_room(MODES[mode])
    events = _events(50)

    def broadcast() -> None:
        for event in events:
            hub.publish(room, orjson.dumps(event))
        _flush(loop, hub, room)

    benchmark(broadcast)
    if mode == "plain":
        _assert_same_bytes(members, [build_frame(orjson.dumps(e)) for e in events])
    else:
        assert all(conn.raw.writes >= 1 for conn in members)  # type: ignore[union-attr]


@pytest.mark.benchmark(group="fanout-many-rooms")
def test_hub_many_rooms_one_message_each(benchmark, loop: asyncio.AbstractEventLoop) -> None:
    """2,000 members, each in 3 of 200 rooms of 30: one message per room, one flush.

    The flush writes each member once for its three rooms (3 writes before it gathered)."""
    metrics = Metrics()
    hub = loop.run_until_complete(_hub(metrics))
    rooms = [hub.open_room(f"room-{i}") for i in range(200)]
    members = make_members(hub, metrics, count=2000)
    for i, conn in enumerate(members):
        for j in range(3):
            hub.enter(rooms[(3 * i + j) % len(rooms)], conn)
    payloads = [orjson.dumps(event) for event in _events(len(rooms))]

    def broadcast() -> None:
        for room, payload in zip(rooms, payloads, strict=True):
            hub.publish(room, payload)
        hub.flush()

    benchmark(broadcast)
    writes = [conn.raw.writes for conn in members]  # type: ignore[union-attr]
    assert min(writes) == max(writes) == metrics.flushes  # one write per member per flush
    assert metrics.deliveries == metrics.flushes * 3 * len(members)


# --- the naive baseline: encode and frame for every recipient -------------------------------


@pytest.mark.benchmark(group="fanout-1msg-1000")
def test_naive_per_recipient_1(benchmark, make_room: RoomFactory) -> None:
    _, _, members = make_room(PLAIN)
    (event,) = _events(1)
    raws = [conn.raw for conn in members]

    def broadcast() -> None:
        for raw in raws:
            raw.write(build_frame(orjson.dumps(event)))  # type: ignore[union-attr]

    benchmark(broadcast)
    _assert_same_bytes(members, [build_frame(orjson.dumps(event))])


@pytest.mark.benchmark(group="fanout-50msg-1000")
def test_naive_per_recipient_50(benchmark, make_room: RoomFactory) -> None:
    _, _, members = make_room(PLAIN)
    events = _events(50)
    raws = [conn.raw for conn in members]

    def broadcast() -> None:
        for event in events:
            for raw in raws:
                raw.write(build_frame(orjson.dumps(event)))  # type: ignore[union-attr]

    benchmark(broadcast)
    last = members[-1].raw
    assert last.writes % 50 == 0  # type: ignore[union-attr]
    assert last.last == build_frame(orjson.dumps(events[-1]))  # type: ignore[union-attr]


# --- corking on a real socket ---------------------------------------------------------------


def _tcp_pair() -> tuple[socket.socket, socket.socket]:
    with socket.create_server(("127.0.0.1", 0)) as listener:
        writer = socket.create_connection(listener.getsockname())
        reader, _ = listener.accept()
    writer.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)  # as asyncio/uvloop set it
    return writer, reader


@pytest.fixture(params=["tcp", "unix"])
def socket_pair(request: pytest.FixtureRequest) -> Iterator[tuple[socket.socket, socket.socket]]:
    """A connected non-blocking (writer, reader) pair over loopback TCP or a Unix socket."""
    writer, reader = _tcp_pair() if request.param == "tcp" else socket.socketpair()
    writer.setblocking(False)
    reader.setblocking(False)
    yield writer, reader
    writer.close()
    reader.close()


class _Drain:
    """Reads the reader side empty between rounds and counts what arrived."""

    def __init__(self, reader: socket.socket) -> None:
        self.reader = reader
        self.buffer = bytearray(1 << 20)
        self.received = 0

    def __call__(self) -> None:
        while True:
            try:
                n = self.reader.recv_into(self.buffer)
            except BlockingIOError:
                return
            if not n:
                return
            self.received += n

    def until(self, total: int) -> None:
        self.reader.settimeout(5.0)
        while self.received < total:
            self.received += self.reader.recv_into(self.buffer)


def _frames() -> list[bytes]:
    return [build_frame(new_message_event(seq)) for seq in range(CORK_FRAMES)]


@pytest.mark.benchmark(group="cork-50-frames")
def test_cork_one_write(benchmark, socket_pair: tuple[socket.socket, socket.socket]) -> None:
    writer, reader = socket_pair
    frames = _frames()
    drain = _Drain(reader)
    sent = 0

    def corked() -> None:
        nonlocal sent
        sent += writer.send(b"".join(frames))

    benchmark.pedantic(corked, setup=drain, rounds=2000, warmup_rounds=50)
    drain.until(sent)
    assert sent % sum(map(len, frames)) == 0
    assert drain.received == sent


@pytest.mark.benchmark(group="cork-50-frames")
def test_cork_write_per_frame(benchmark, socket_pair: tuple[socket.socket, socket.socket]) -> None:
    writer, reader = socket_pair
    frames = _frames()
    drain = _Drain(reader)
    sent = 0

    def uncorked() -> None:
        nonlocal sent
        for frame in frames:
            sent += writer.send(frame)

    benchmark.pedantic(uncorked, setup=drain, rounds=2000, warmup_rounds=50)
    drain.until(sent)
    assert sent % sum(map(len, frames)) == 0
    assert drain.received == sent
