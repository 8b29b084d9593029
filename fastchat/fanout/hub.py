"""The fan-out engine: local connections, each room's log and members' cursors, the flush.

A broadcast is encoded once (the caller passes the JSON bytes), framed once and, when any
member negotiated shared permessage-deflate, compressed once, then appended to the room's
log. A flush writes each member everything the log holds past that member's cursor in one
``write``: members written together share one joined ``bytes`` object, so the work per
recipient is a cursor update and one ``write`` call. A connection in several rooms that
flush together gets one ``write`` for all of them (as uWebSockets corks a socket across
its topics).

Rooms of up to ``_STEP`` members are written in one go at the end of the loop iteration
(``loop.call_soon``, or ``coalesce_ms`` after the previous flush under load), which is
where the corking comes from. Larger rooms are written in *rounds* of steps with the loop
reading in between, and each member gets what was published up to its own turn: a message
waits at most one round for every member, instead of the rest of the current round plus
its own (on this machine a round to 1,000 members is ~13 ms of ``send()`` calls).

A connection that gets an event of its own (a reply, an ack) is first given what its rooms
published before that event (:meth:`Hub.catch_up`), so every connection sees events in the
order they were produced. Nothing here awaits.

The hub knows connections only through :class:`~fastchat.ws.peer.Peer`, and rooms only as
fan-out state (:class:`Room`); what a room *is* (name, members, history) is the chat's
(:mod:`fastchat.chat.rooms`). The chat publishes through a
:class:`~fastchat.fanout.broker.Broker`, whose local implementation calls this hub.
"""

from __future__ import annotations

import asyncio
from collections.abc import Iterable, KeysView
from collections.abc import Set as AbstractSet
from typing import TYPE_CHECKING, Protocol

from fastchat.config import WebSocketConfig
from fastchat.metrics import Metrics
from fastchat.ws.deflate import shared_deflater
from fastchat.ws.frames import build_frame, frame_payload
from fastchat.ws.peer import DEDICATED, PLAIN, SHARED

if TYPE_CHECKING:
    from fastchat.ws.peer import Peer as Connection

_NOBODY: frozenset[Connection] = frozenset()
# Members of a room written per flush step; see the module docstring.
_STEP = 128
# A round still under way after this long writes all its remaining members at once: under
# saturation the loop reads for long between steps, and stretching rounds would only make
# each member's batch (and the memory it pins in socket buffers) larger.
_ROUND_SECONDS = 0.02


class Room:
    """A room's fan-out state: the connections in it now, its log, the round in progress."""

    __slots__ = (
        "_base",
        "_frames",
        "_last_joined",
        "_queued",
        "_round",
        "_round_end",
        "_round_pos",
        "_round_started",
        "_special",
        "_zframes",
        "conns",
        "id",
        "n_shared",
        "present",
    )

    def __init__(self, room_id: str):
        self.id = room_id
        # Connections in the room now -> log index of the next frame each is to be written.
        self.conns: dict[Connection, int] = {}
        self.present: dict[str, int] = {}  # user id -> how many of its connections are in
        self.n_shared = 0
        # The log: frames not yet written to every member; _frames[0] has index _base.
        self._frames: list[bytes] = []
        # The same, shared-deflated (while n_shared > 0). The payloads are not kept: orjson's
        # output holds a buffer of several KiB whatever its length, the frame a copy of it.
        self._zframes: list[bytes] = []
        self._base = 0
        # (start, end, plain, zplain) of the last _joined: members caught up together (the
        # publishers acked by one commit) share it instead of each joining the same frames.
        self._last_joined: tuple[int, int, bytes, bytes | None] = (0, 0, b"", None)
        # index -> (droppable, excluded connections) for entries not meant for everyone
        self._special: dict[int, tuple[bool, frozenset[Connection]]] = {}
        self._queued = False  # in the hub's dirty list
        self._round: list[Connection] = []  # the members of the round in progress
        self._round_pos = 0
        self._round_end = 0  # the log's end when the round began
        self._round_started = 0.0

    @property
    def log_end(self) -> int:
        """The index the next published frame gets."""
        return self._base + len(self._frames)

    @property
    def writing(self) -> bool:
        """A round of writes to the members is under way (a large room takes several steps)."""
        return bool(self._round)

    def online_user_ids(self) -> KeysView[str]:
        """Users with at least one connection in the room (kept by Hub.enter/leave)."""
        return self.present.keys()


class RoomWatcher(Protocol):
    """Told when a room gets its first local connection and loses its last (a broker that
    spans processes subscribes to a room only while it has local members)."""

    def occupied(self, room: Room) -> None: ...
    def vacated(self, room: Room) -> None: ...


class Hub:
    """Every local connection, by room and by user; owns the per-iteration flush.

    It is also the :class:`~fastchat.ws.peer.Registry` of the connections: they report
    their opening and closing here (:meth:`opened`, :meth:`closing`, :meth:`closed`).
    """

    def __init__(self, config: WebSocketConfig, metrics: Metrics):
        self.loop = asyncio.get_running_loop()
        self._config = config
        self._metrics = metrics
        self._threshold = config.compression_threshold
        self._shared = shared_deflater(15) if config.compression != "off" else None
        self.rooms: dict[str, Room] = {}
        self.users: dict[str, set[Connection]] = {}  # online user id -> its connections
        self.connections: set[Connection] = set()
        # Rooms to start a round for and connections with events of their own, in the order
        # they got them (catch_up keeps each connection's room events ahead of its own).
        self._dirty: list[Room | Connection] = []
        self._flush_scheduled = False
        self._coalesce = config.coalesce_ms / 1000
        self._last_flush = 0.0
        # During a flush of several dirty items: connections handed room frames, written
        # once at its end (see flush).
        self._gathered: list[Connection] | None = None
        self.watcher: RoomWatcher | None = None

    # --- connections and users ------------------------------------------------------------

    def opened(self, conn: Connection) -> None:
        """A connection completed its handshake."""
        self.connections.add(conn)

    def closing(self, conn: Connection) -> None:
        """A connection is about to send its close frame: queue what it is owed first."""
        self.catch_up(conn)

    def closed(self, conn: Connection) -> None:
        """A connection is gone (its rooms and user are left by the chat)."""
        self.connections.discard(conn)

    def bind_user(self, conn: Connection, user_id: str) -> bool:
        """Mark ``conn`` as ``user_id``'s; True when it is the user's first connection."""
        conn.user_id = user_id
        conns = self.users.setdefault(user_id, set())
        conns.add(conn)
        return len(conns) == 1

    def unbind_user(self, conn: Connection, user_id: str) -> bool:
        """Forget ``conn`` as ``user_id``'s; True when the user has no connection left."""
        conns = self.users.get(user_id)
        if conns is None:
            return False
        conns.discard(conn)
        if conns:
            return False
        del self.users[user_id]
        return True

    def user_conns(self, user_id: str) -> AbstractSet[Connection]:
        """The connections of an online user (empty when offline)."""
        return self.users.get(user_id, _NOBODY)

    def open_room(self, room_id: str) -> Room:
        """The fan-out state of ``room_id``, made on first use."""
        room = self.rooms.get(room_id)
        if room is None:
            room = self.rooms[room_id] = Room(room_id)
        return room

    def send_to_all(self, payload: bytes) -> None:
        """Queue ``payload`` for every authenticated connection."""
        for conn in self.connections:
            if conn.user_id:
                self.send(conn, payload)

    # --- queueing -------------------------------------------------------------------------

    def publish(
        self,
        room: Room,
        payload: bytes,
        *,
        droppable: bool = False,
        exclude: Iterable[Connection] = (),
    ) -> None:
        """Queue ``payload`` (an encoded event) for every connection in ``room``."""
        if not room.conns:
            return
        frame = build_frame(payload)
        excluded = frozenset(exclude) if exclude else _NOBODY
        if droppable or excluded:
            room._special[room.log_end] = (droppable, excluded)
        room._frames.append(frame)
        if room.n_shared:
            room._zframes.append(self._compressed_frame(payload, frame))
        self._metrics.frames_out += 1
        if not room._queued and not room._round:  # a round in progress takes it along
            self._queue_room(room)

    def send(self, conn: Connection, payload: bytes, *, droppable: bool = False) -> None:
        """Queue ``payload`` for one connection (replies, acks, errors)."""
        if conn.closed:
            return
        if droppable and conn.paused:
            self._metrics.dropped_events += 1
            return
        if conn.rooms:
            self.catch_up(conn)
        compress = conn.compress
        if compress == PLAIN or len(payload) < self._threshold:
            frame = build_frame(payload)
        elif compress == SHARED:
            frame = self._compressed_frame(payload, None)
        else:
            frame = build_frame(conn.deflater.compress(payload), rsv1=True)
            self._metrics.compressed_frames += 1
        self._metrics.frames_out += 1
        self._queue(conn, frame)

    def send_many(
        self, conns: Iterable[Connection], payload: bytes, *, droppable: bool = False
    ) -> None:
        """Send one event to a set of connections that is not a room (presence, DMs)."""
        for conn in conns:
            self.send(conn, payload, droppable=droppable)

    def _compressed_frame(self, payload: bytes, frame: bytes | None) -> bytes:
        if len(payload) < self._threshold or self._shared is None:
            return frame if frame is not None else build_frame(payload)
        compressed = self._shared.compress(payload)
        metrics = self._metrics
        metrics.compressed_frames += 1
        metrics.deflate_in_bytes += len(payload)
        metrics.deflate_out_bytes += len(compressed)
        return build_frame(compressed, rsv1=True)

    def _queue(self, conn: Connection, blob: bytes) -> None:
        if conn.paused:
            conn.hold(blob)
            return
        out = conn.out
        if out is None:
            conn.out = blob
            self._dirty.append(conn)
            self._schedule()
        elif type(out) is list:
            out.append(blob)
        else:
            conn.out = [out, blob]

    def _queue_room(self, room: Room) -> None:
        room._queued = True
        self._dirty.append(room)
        self._schedule()

    def _schedule(self) -> None:
        """Flush at the end of this iteration, or ``coalesce`` seconds after the last flush.

        When the server is idle the next flush is immediate; when flushes come closer than
        ``coalesce`` apart (a busy room), frames gather for a moment and every member gets
        them in one write, which is what bounds the syscalls per delivery under load.
        """
        if not self._flush_scheduled:
            self._flush_scheduled = True
            delay = self._last_flush + self._coalesce - self.loop.time()
            if delay > 0:
                self.loop.call_later(delay, self.flush)
            else:
                self.loop.call_soon(self.flush)

    # --- the flush: once per loop iteration (or coalescing interval) ----------------------

    def flush(self) -> None:
        """Write everything queued since the last flush: one write per connection.

        A connection in several dirty rooms (or with events of its own) gets what each
        room's step has for it appended to its ``out``, and one write at the end: the
        syscall, not the bytes, is what a delivery costs on loopback (docs/benchmarks.md).
        """
        self._flush_scheduled = False
        self._last_flush = self.loop.time()
        self._metrics.flushes += 1
        dirty, self._dirty = self._dirty, []
        if len(dirty) == 1:  # nothing to gather across
            item = dirty[0]
            if type(item) is Room:
                self._flush_room(item)
            else:
                item.flush()  # type: ignore[union-attr]
            return
        gathered = self._gathered = []
        try:
            for item in dirty:
                if type(item) is Room:
                    self._flush_room(item)
                else:
                    item.flush()  # type: ignore[union-attr]
        finally:
            self._gathered = None
        for conn in gathered:
            conn.flush()

    def _flush_room(self, room: Room) -> None:
        """Start a round: every member present now, ``_STEP`` of them per loop iteration."""
        room._queued = False
        room._round = list(room.conns)
        room._round_pos = 0
        room._round_end = room.log_end
        room._round_started = self.loop.time()
        self._step(room)

    def _step(self, room: Room) -> None:
        start = room._round_pos
        late = self.loop.time() - room._round_started > _ROUND_SECONDS
        room._round_pos = len(room._round) if late else start + _STEP
        self._write(room, room._round[start : room._round_pos])
        if room._round_pos < len(room._round):
            self.loop.call_soon(self._step, room)  # the loop reads before the next step
            return
        room._round = []
        # Every member's cursor is now at or past _round_end (members that joined during
        # the round started there), so the log before it is written everywhere.
        self._trim(room, room._round_end)
        if room._frames:  # published during the round: members written early lack them
            self._queue_room(room)

    def _write(self, room: Room, conns: list[Connection]) -> None:
        """Write each of ``conns`` the log past its cursor."""
        if not conns:
            return
        end = room.log_end
        cursors = room.conns
        special = room._special
        concerned: set[Connection] = set()
        droppable = False
        for entry_droppable, excluded in special.values():
            concerned.update(excluded)
            droppable = droppable or entry_droppable
        # Members written in the same step last round share a cursor: one joined blob
        # serves them all. Others (joined since, caught up, or concerned) are done apart.
        common = cursors.get(conns[0], end)
        plain, zplain = self._joined(room, common, end) if common < end else (b"", None)
        together: list[Connection] = []
        apart: list[tuple[Connection, int]] = []
        for conn in conns:
            cursor = cursors.get(conn)
            if cursor is None or cursor >= end:
                continue  # left the room, or caught up already
            cursors[conn] = end
            if cursor == common and conn.compress != DEDICATED and conn not in concerned:
                together.append(conn)
            else:
                apart.append((conn, cursor))
        if droppable:  # a paused member skips the droppable entries
            apart += [(conn, common) for conn in together if conn.paused]
            together = [conn for conn in together if not conn.paused]
        compressed = 0
        gathered = self._gathered
        for conn in together:
            self._hand_over(conn, zplain if conn.compress else plain, gathered)  # type: ignore[arg-type]
            if conn.compress:
                compressed += 1
        deliveries = len(together) * (end - common)
        sent = (len(together) - compressed) * len(plain)
        if compressed:
            sent += compressed * len(zplain)  # type: ignore[arg-type]
        for conn, cursor in apart:
            blob, count = self._variant(room, conn, cursor, end)
            if blob:
                self._hand_over(conn, blob, gathered)
                sent += len(blob)
                deliveries += count
        self._metrics.deliveries += deliveries
        self._metrics.bytes_out += sent

    def _hand_over(self, conn: Connection, blob: bytes, gathered: list[Connection] | None) -> None:
        """Give ``conn`` a room's frames: now, or in the flush's one write (``gathered``)."""
        if conn.out is not None:  # queued before these (its own events): keep the order
            self._queue(conn, blob)
        elif gathered is None or conn.paused:
            conn.deliver(blob)
        else:
            conn.out = blob
            gathered.append(conn)

    def catch_up(self, conn: Connection) -> None:
        """Queue for ``conn`` what its rooms published that it was not written yet.

        Called before an event of its own is queued (and before it leaves a room or
        closes), so that it sees every event in the order they were produced.
        """
        if conn.closed:
            return
        for room in conn.rooms:
            cursor = room.conns.get(conn)
            end = room.log_end
            if cursor is None or cursor >= end:
                continue
            room.conns[conn] = end
            blob, count = self._variant(room, conn, cursor, end)
            if blob:
                self._metrics.deliveries += count
                self._metrics.bytes_out += len(blob)
                self._queue(conn, blob)

    def _joined(self, room: Room, start: int, end: int) -> tuple[bytes, bytes | None]:
        """Log entries ``start`` to ``end`` joined, plain and shared-deflated."""
        first, last = start - room._base, end - room._base
        if last - first == 1:
            return room._frames[first], room._zframes[first] if room.n_shared else None
        cached = room._last_joined
        if cached[0] == start and cached[1] == end and (cached[3] is None) != bool(room.n_shared):
            return cached[2], cached[3]
        plain = b"".join(room._frames[first:last])
        zplain = b"".join(room._zframes[first:last]) if room.n_shared else None
        room._last_joined = (start, end, plain, zplain)
        return plain, zplain

    def _variant(self, room: Room, conn: Connection, start: int, end: int) -> tuple[bytes, int]:
        """Log entries ``start`` to ``end`` as ``conn`` gets them, and how many they are.

        Entries that exclude ``conn``, or are droppable while it is paused, are left out;
        a connection with its own compressor compresses each entry itself.
        """
        special = room._special
        base = room._base
        compress = conn.compress
        if compress != DEDICATED and not any(start <= index < end for index in special):
            plain, zplain = self._joined(room, start, end)
            return (zplain if compress else plain), end - start  # type: ignore[return-value]
        frames = room._zframes if compress == SHARED else room._frames
        parts = []
        for index in range(start, end):
            entry = special.get(index)
            if entry is not None:
                entry_droppable, excluded = entry
                if conn in excluded:
                    continue
                if entry_droppable and conn.paused:
                    self._metrics.dropped_events += 1
                    continue
            if compress == DEDICATED:
                payload = frame_payload(frames[index - base])
                if len(payload) >= self._threshold:
                    parts.append(build_frame(conn.deflater.compress(payload), rsv1=True))
                    self._metrics.compressed_frames += 1
                    continue
            parts.append(frames[index - base])
        return b"".join(parts), len(parts)

    def _trim(self, room: Room, upto: int) -> None:
        """Forget the log entries before index ``upto``."""
        count = upto - room._base
        if count <= 0:
            return
        del room._frames[:count]
        if room._zframes:
            del room._zframes[:count]
        room._base = upto
        if room._last_joined[0] < upto:
            room._last_joined = (0, 0, b"", None)
        if room._special:
            room._special = {i: entry for i, entry in room._special.items() if i >= upto}

    # --- membership of live connections ---------------------------------------------------

    def enter(self, room: Room, conn: Connection) -> None:
        if conn.closed or conn in room.conns:  # closed: a join that waited on storage
            return
        room.conns[conn] = room.log_end  # from what is published next
        conn.rooms.append(room)
        if len(room.conns) == 1 and self.watcher is not None:
            self.watcher.occupied(room)
        if conn.user_id is not None:
            room.present[conn.user_id] = room.present.get(conn.user_id, 0) + 1
        if conn.compress == SHARED:
            if not room.n_shared:
                room._zframes = list(room._frames)  # uncompressed frames are valid for it too
            room.n_shared += 1

    def leave(self, room: Room, conn: Connection) -> None:
        if conn not in room.conns:
            return
        self.catch_up(conn)  # what was published while it was a member
        del room.conns[conn]
        conn.rooms.remove(room)
        if not room.conns and self.watcher is not None:
            self.watcher.vacated(room)
        if conn.user_id is not None:
            left = room.present[conn.user_id] - 1
            if left:
                room.present[conn.user_id] = left
            else:
                del room.present[conn.user_id]
        if conn.compress == SHARED:
            room.n_shared -= 1
            if not room.n_shared:
                room._zframes = []  # nobody to compress for; rebuilt by the next enter
