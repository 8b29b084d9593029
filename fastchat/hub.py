"""Rooms, presence and the fan-out engine.

A broadcast is encoded once (the caller passes the JSON bytes), framed once and, when any
member negotiated shared permessage-deflate, compressed once. Frames published to a room
during one event-loop iteration are joined once at the end of the iteration, and that one
``bytes`` object is written to every member: the work per recipient is one ``write`` call.

Nothing here awaits: :meth:`Hub.publish` and :meth:`Hub.send` queue bytes and schedule one
flush per loop iteration (``loop.call_soon``), which is where the corking comes from.
"""

from __future__ import annotations

import asyncio
from collections import deque
from collections.abc import Iterable, KeysView
from typing import TYPE_CHECKING

from fastchat.config import WebSocketConfig
from fastchat.metrics import Metrics
from fastchat.ws.deflate import shared_deflater
from fastchat.ws.frames import build_frame

if TYPE_CHECKING:
    from fastchat.ws.connection import Connection

_NOBODY: frozenset[Connection] = frozenset()

# Connection.compress values
PLAIN = 0
SHARED = 1
DEDICATED = 2


class Room:
    """A room's live state: who is in it now, its order of record, recent history."""

    __slots__ = (
        "_frames",
        "_payloads",
        "_special",
        "_zframes",
        "conns",
        "created_by",
        "description",
        "history",
        "id",
        "is_private",
        "member_ids",
        "n_dedicated",
        "n_shared",
        "name",
        "present",
        "seq",
        "typing",
    )

    def __init__(
        self,
        room_id: str,
        name: str,
        description: str | None,
        is_private: bool,
        created_by: str | None,
        member_ids: set[str],
        seq: int,
    ):
        self.id = room_id
        self.name = name
        self.description = description
        self.is_private = is_private
        self.created_by = created_by
        self.member_ids = member_ids  # persisted membership (who may join a private room)
        self.seq = seq  # the last seq handed out
        self.conns: set[Connection] = set()  # connections in the room now
        self.present: dict[str, int] = {}  # user id -> how many of its connections are in
        self.n_shared = 0
        self.n_dedicated = 0
        self.history: deque[dict] | None = None  # loaded on first use
        self.typing: dict[str, asyncio.TimerHandle] = {}
        self._frames: list[bytes] = []
        self._zframes: list[bytes] = []
        self._payloads: list[bytes] = []
        # (index, droppable, excluded connections) for entries not meant for everyone
        self._special: list[tuple[int, bool, frozenset[Connection]]] = []

    def summary(self) -> dict:
        return {
            "id": self.id,
            "name": self.name,
            "description": self.description,
            "is_private": self.is_private,
            "member_count": len(self.member_ids),
        }

    def online_user_ids(self) -> KeysView[str]:
        """Users with at least one connection in the room (kept by Hub.enter/leave)."""
        return self.present.keys()


class Hub:
    """All rooms and the connections of every online user; owns the per-iteration flush."""

    def __init__(self, config: WebSocketConfig, metrics: Metrics):
        self.loop = asyncio.get_running_loop()
        self._config = config
        self._metrics = metrics
        self._threshold = config.compression_threshold
        self._shared = shared_deflater(15) if config.compression != "off" else None
        self.rooms: dict[str, Room] = {}
        self.users: dict[str, set[Connection]] = {}  # online user id -> its connections
        self.connections: set[Connection] = set()
        # Rooms and connections with queued bytes, in the order they got them, so that
        # events reach each connection in the order they were produced.
        self._dirty: list[Room | Connection] = []
        self._flush_scheduled = False
        self._coalesce = config.coalesce_ms / 1000
        self._last_flush = 0.0

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
        if not room._frames:
            self._dirty.append(room)
            self._schedule()
        frame = build_frame(payload)
        room._frames.append(frame)
        room._payloads.append(payload)
        if room.n_shared:
            room._zframes.append(self._compressed_frame(payload, frame))
        excluded = frozenset(exclude) if exclude else _NOBODY
        if droppable or excluded:
            room._special.append((len(room._frames) - 1, droppable, excluded))

    def send(self, conn: Connection, payload: bytes, *, droppable: bool = False) -> None:
        """Queue ``payload`` for one connection (replies, acks, errors)."""
        if conn.closed:
            return
        if droppable and conn.paused:
            self._metrics.dropped_events += 1
            return
        compress = conn.compress
        if compress == PLAIN or len(payload) < self._threshold:
            frame = build_frame(payload)
        elif compress == SHARED:
            frame = self._compressed_frame(payload, None)
        else:
            frame = build_frame(conn.deflater.compress(payload), rsv1=True)
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
        self._metrics.compressed_frames += 1
        return build_frame(self._shared.compress(payload), rsv1=True)

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
        """Write everything queued since the last flush: one write per connection and room."""
        self._flush_scheduled = False
        self._last_flush = self.loop.time()
        self._metrics.flushes += 1
        dirty, self._dirty = self._dirty, []
        for item in dirty:
            if type(item) is Room:
                self._flush_room(item)
            else:
                item.flush()  # type: ignore[union-attr]

    def _flush_room(self, room: Room) -> None:
        frames = room._frames
        n_frames = len(frames)
        plain = frames[0] if n_frames == 1 else b"".join(frames)
        zplain = None
        if room.n_shared:
            zframes = room._zframes
            zplain = zframes[0] if n_frames == 1 else b"".join(zframes)
        if not room._special and not room.n_dedicated:
            for conn in room.conns:
                conn.deliver(zplain if conn.compress else plain)
            recipients = len(room.conns)
        else:
            recipients = self._flush_special(room, plain, zplain)
        metrics = self._metrics
        metrics.deliveries += recipients * n_frames
        metrics.frames_out += n_frames
        metrics.bytes_out += recipients * len(plain)
        room._frames = []
        room._zframes = []
        room._payloads = []
        room._special = []

    def _flush_special(self, room: Room, plain: bytes, zplain: bytes | None) -> int:
        """Some entries are droppable or exclude someone, or a member deflates alone.

        Only the connections concerned (excluded, paused, or with their own compressor)
        get bytes of their own; everyone else still shares the joined batch.
        """
        special = room._special
        concerned: set[Connection] = set()
        droppable = False
        for _, entry_droppable, excluded in special:
            concerned.update(excluded)
            droppable = droppable or entry_droppable
        recipients = 0
        for conn in room.conns:
            compress = conn.compress
            if compress != DEDICATED and conn not in concerned and not (droppable and conn.paused):
                conn.deliver(zplain if compress else plain)
                recipients += 1
                continue
            skip = {
                index
                for index, entry_droppable, excluded in special
                if conn in excluded or (entry_droppable and conn.paused)
            }
            if droppable and conn.paused:
                self._metrics.dropped_events += sum(1 for _, d, _ in special if d)
            blob = self._variant(room, conn, skip)
            if blob:
                conn.deliver(blob)
                recipients += 1
        return recipients

    def _variant(self, room: Room, conn: Connection, skip: set[int]) -> bytes:
        compress = conn.compress
        if compress == DEDICATED:
            parts = []
            for index, payload in enumerate(room._payloads):
                if index in skip:
                    continue
                if len(payload) < self._threshold:
                    parts.append(room._frames[index])
                else:
                    parts.append(build_frame(conn.deflater.compress(payload), rsv1=True))
            return b"".join(parts)
        frames = room._zframes if compress == SHARED else room._frames
        return b"".join(frame for index, frame in enumerate(frames) if index not in skip)

    # --- membership of live connections ---------------------------------------------------

    def enter(self, room: Room, conn: Connection) -> None:
        if conn in room.conns:
            return
        room.conns.add(conn)
        conn.rooms.append(room)
        if conn.user_id is not None:
            room.present[conn.user_id] = room.present.get(conn.user_id, 0) + 1
        if conn.compress == SHARED:
            if not room.n_shared:
                room._zframes = list(room._frames)  # uncompressed frames are valid for it too
            room.n_shared += 1
        elif conn.compress == DEDICATED:
            room.n_dedicated += 1

    def leave(self, room: Room, conn: Connection) -> None:
        if conn not in room.conns:
            return
        room.conns.discard(conn)
        conn.rooms.remove(room)
        if conn.user_id is not None:
            left = room.present[conn.user_id] - 1
            if left:
                room.present[conn.user_id] = left
            else:
                del room.present[conn.user_id]
        if conn.compress == SHARED:
            room.n_shared -= 1
        elif conn.compress == DEDICATED:
            room.n_dedicated -= 1
