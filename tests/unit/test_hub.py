"""The hub's rounds and cursors, in-process: real Hub and Connections over recording sockets.

Rooms larger than one flush step are written over several loop iterations; what each
connection receives must still be every event meant for it, once, in the order the events
were produced, and the room's log must not outlive the round that wrote it.
"""

from __future__ import annotations

import asyncio
from collections.abc import Iterator

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from fastchat.config import WebSocketConfig
from fastchat.fanout.hub import _STEP, Hub, Room
from fastchat.metrics import Metrics
from fastchat.ws.connection import Connection
from fastchat.ws.peer import PLAIN
from tests.support.frames import split_frames
from tests.support.transports import RecordingTransport


def payloads(conn: Connection) -> list[bytes]:
    """The payloads of the unmasked, uncompressed frames written to ``conn``."""
    return [frame.payload for frame in split_frames(conn.raw.data)]  # type: ignore[union-attr]


@pytest.fixture
def loop() -> Iterator[asyncio.AbstractEventLoop]:
    loop = asyncio.new_event_loop()
    asyncio.set_event_loop(loop)
    yield loop
    loop.close()
    asyncio.set_event_loop(None)


def make_hub(loop: asyncio.AbstractEventLoop) -> Hub:
    async def build() -> Hub:
        return Hub(WebSocketConfig(compression="off", coalesce_ms=0), Metrics())

    return loop.run_until_complete(build())


def member(hub: Hub, room: Room | None, number: int) -> Connection:
    conn = Connection(
        hub,
        None,  # type: ignore[arg-type]  # nothing is read in these tests
        hub._config,
        hub._metrics,
        client="127.0.0.1",
        compress=PLAIN,
        deflater=None,
    )
    conn.raw = RecordingTransport()  # type: ignore[assignment]
    conn.user_id = f"user-{number}"
    if room is not None:
        hub.enter(room, conn)
    return conn


def settle(loop: asyncio.AbstractEventLoop, hub: Hub) -> None:
    """Run the loop until nothing is queued and no round is under way."""
    for _ in range(10_000):
        if not hub._flush_scheduled and not any(room.writing for room in hub.rooms.values()):
            return
        loop.run_until_complete(asyncio.sleep(0))
    raise AssertionError("the hub never settled")


def new_room(hub: Hub) -> Room:
    return hub.open_room("general")


def test_a_large_room_gets_every_frame_once_in_order_over_several_steps(loop):
    hub = make_hub(loop)
    room = new_room(hub)
    members = [member(hub, room, i) for i in range(3 * _STEP + 5)]
    events = [b'{"n":%d}' % i for i in range(5)]
    for event in events[:3]:
        hub.publish(room, event)
    hub.flush()
    assert room.writing  # the first step went out; the rest follow in later iterations
    written = sum(1 for conn in members if conn.raw.writes)  # type: ignore[union-attr]
    assert written == _STEP
    for event in events[3:]:  # published mid-round: later steps carry them at once
        hub.publish(room, event)
    settle(loop, hub)
    for conn in members:
        assert payloads(conn) == events
        assert conn.raw.writes <= 2  # type: ignore[union-attr]
    assert room._frames == [] and room._special == {}  # the log went with its round
    assert hub._metrics.deliveries == len(members) * len(events)


def test_a_direct_event_comes_after_the_room_events_before_it(loop):
    hub = make_hub(loop)
    room = new_room(hub)
    members = [member(hub, room, i) for i in range(2 * _STEP)]
    last = members[-1]  # written in the round's last step
    hub.publish(room, b'{"n":1}')
    hub.flush()
    assert room.writing and not last.raw.writes  # type: ignore[union-attr]
    hub.send(last, b'{"ack":1}')  # e.g. a message_ack: must not overtake the broadcast
    hub.publish(room, b'{"n":2}')
    settle(loop, hub)
    assert payloads(last) == [b'{"n":1}', b'{"ack":1}', b'{"n":2}']
    assert payloads(members[0]) == [b'{"n":1}', b'{"n":2}']


def test_leaving_mid_round_still_delivers_what_was_published_before(loop):
    hub = make_hub(loop)
    room = new_room(hub)
    members = [member(hub, room, i) for i in range(2 * _STEP)]
    leaver = members[-1]
    hub.publish(room, b'{"n":1}')
    hub.flush()
    hub.leave(room, leaver)
    hub.publish(room, b'{"n":2}')
    settle(loop, hub)
    assert payloads(leaver) == [b'{"n":1}']
    assert payloads(members[0]) == [b'{"n":1}', b'{"n":2}']


def test_joining_mid_round_starts_with_the_next_event(loop):
    hub = make_hub(loop)
    room = new_room(hub)
    members = [member(hub, room, i) for i in range(2 * _STEP)]
    hub.publish(room, b'{"n":1}')
    hub.flush()
    joiner = member(hub, room, 9999)
    hub.publish(room, b'{"n":2}')
    settle(loop, hub)
    assert payloads(joiner) == [b'{"n":2}']
    assert all(payloads(conn) == [b'{"n":1}', b'{"n":2}'] for conn in members)


def test_droppable_events_skip_paused_members_and_excluded_ones_skip_the_excluded(loop):
    hub = make_hub(loop)
    room = new_room(hub)
    members = [member(hub, room, i) for i in range(2 * _STEP)]
    typist, paused = members[0], members[-1]
    paused.paused = True
    hub.publish(room, b'{"typing":1}', droppable=True, exclude=(typist,))
    hub.publish(room, b'{"n":1}')
    settle(loop, hub)
    paused.paused = False
    assert payloads(typist) == [b'{"n":1}']
    assert [[f.payload for f in split_frames(blob)] for blob in paused.held or []] == [[b'{"n":1}']]
    assert payloads(members[1]) == [b'{"typing":1}', b'{"n":1}']
    assert hub._metrics.dropped_events == 1


# Each step: publish to the room (optionally excluding one member), send one member a
# direct event, let the loop run once, or move a connection in or out of the room.
operations = st.lists(
    st.one_of(
        st.tuples(st.just("publish"), st.none() | st.integers(0, 299)),
        st.tuples(st.just("send"), st.integers(0, 299)),
        st.tuples(st.just("iterate"), st.none()),
        st.tuples(st.just("flush"), st.none()),
        st.tuples(st.just("leave"), st.integers(0, 299)),
        st.tuples(st.just("enter"), st.integers(0, 299)),
    ),
    max_size=60,
)


@settings(max_examples=100, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(ops=operations)
def test_every_connection_receives_exactly_its_events_in_order(ops):
    """A model: each connection must get, in production order, every room event published
    while it was in the room (unless excluded) and every event sent to it."""
    loop = asyncio.new_event_loop()
    asyncio.set_event_loop(loop)
    try:
        hub = make_hub(loop)
        room = new_room(hub)
        conns = [member(hub, room, i) for i in range(300)]
        expected: list[list[bytes]] = [[] for _ in conns]
        inside = set(range(len(conns)))
        for number, (kind, target) in enumerate(ops):
            event = b'{"e":%d}' % number
            if kind == "publish":
                excluded = () if target is None else (conns[target],)
                hub.publish(room, event, exclude=excluded)
                for i in inside:
                    if i != target:
                        expected[i].append(event)
            elif kind == "send":
                hub.send(conns[target], event)
                expected[target].append(event)
            elif kind == "iterate":
                loop.run_until_complete(asyncio.sleep(0))
            elif kind == "flush":
                hub.flush()
            elif kind == "leave" and target in inside:
                hub.leave(room, conns[target])
                inside.discard(target)
            elif kind == "enter" and target not in inside:
                hub.enter(room, conns[target])
                inside.add(target)
        settle(loop, hub)
        for i, conn in enumerate(conns):
            assert payloads(conn) == expected[i], f"connection {i}"
        assert room._frames == []
    finally:
        loop.close()
        asyncio.set_event_loop(None)


def test_a_connection_in_several_rooms_gets_one_write_per_flush(loop):
    hub = make_hub(loop)
    rooms = [hub.open_room(f"room-{i}") for i in range(3)]
    everywhere = member(hub, None, 0)
    for room in rooms:
        hub.enter(room, everywhere)
    alone = member(hub, rooms[1], 1)
    for i, room in enumerate(rooms):
        hub.publish(room, b'{"room":%d}' % i)
    hub.send(everywhere, b'{"own":1}')  # after the room events queued before it
    settle(loop, hub)
    assert everywhere.raw.writes == 1  # type: ignore[union-attr]
    assert payloads(everywhere) == [b'{"room":0}', b'{"room":1}', b'{"room":2}', b'{"own":1}']
    assert payloads(alone) == [b'{"room":1}']
    assert all(room._frames == [] for room in rooms)


# Three rooms: one of everybody and two that overlap, two of them large enough for rounds.
ROOM_MEMBERS = (range(300), range(100), range(50, 200))
multi_room_operations = st.lists(
    st.one_of(
        st.tuples(st.just("publish"), st.integers(0, 2)),
        st.tuples(st.just("send"), st.integers(0, 299)),
        st.tuples(st.just("iterate"), st.none()),
        st.tuples(st.just("flush"), st.none()),
        st.tuples(st.just("leave"), st.tuples(st.integers(0, 2), st.integers(0, 299))),
        st.tuples(st.just("enter"), st.tuples(st.integers(0, 2), st.integers(0, 299))),
    ),
    max_size=60,
)


@settings(max_examples=100, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(ops=multi_room_operations)
def test_across_rooms_each_room_keeps_its_order_and_own_events_keep_their_place(ops):
    """A model of connections in several rooms, written once per flush across them: each
    connection gets every event meant for it once, each room's events in production order,
    and an event of its own after everything produced before it and before everything after."""
    loop = asyncio.new_event_loop()
    asyncio.set_event_loop(loop)
    try:
        hub = make_hub(loop)
        rooms = [hub.open_room(f"room-{i}") for i in range(len(ROOM_MEMBERS))]
        conns = [member(hub, None, i) for i in range(300)]
        inside = [set(members) for members in ROOM_MEMBERS]
        for room, members in zip(rooms, inside, strict=True):
            for i in members:
                hub.enter(room, conns[i])
        expected: list[list[tuple[int, bytes]]] = [[] for _ in conns]  # (room or -1, event)
        for number, (kind, target) in enumerate(ops):
            event = b'{"e":%d}' % number
            if kind == "publish":
                hub.publish(rooms[target], event)
                for i in inside[target]:
                    expected[i].append((target, event))
            elif kind == "send":
                hub.send(conns[target], event)
                expected[target].append((-1, event))
            elif kind == "iterate":
                loop.run_until_complete(asyncio.sleep(0))
            elif kind == "flush":
                hub.flush()
            elif kind == "leave" and target[1] in inside[target[0]]:
                hub.leave(rooms[target[0]], conns[target[1]])
                inside[target[0]].discard(target[1])
            elif kind == "enter" and target[1] not in inside[target[0]]:
                hub.enter(rooms[target[0]], conns[target[1]])
                inside[target[0]].add(target[1])
        settle(loop, hub)
        for i, conn in enumerate(conns):
            got = payloads(conn)
            want = expected[i]
            assert sorted(got) == sorted(event for _, event in want), f"connection {i}"
            for source in (-1, *range(len(rooms))):
                mine = [event for origin, event in want if origin == source]
                assert [event for event in got if event in mine] == mine, f"connection {i}"
            for at, (origin, event) in enumerate(want):
                if origin == -1:
                    before = {e for _, e in want[:at]}
                    assert set(got[: got.index(event)]) == before, f"connection {i}"
        assert all(room._frames == [] for room in rooms)
    finally:
        loop.close()
        asyncio.set_event_loop(None)
