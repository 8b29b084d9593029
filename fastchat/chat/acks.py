"""Acknowledgements and idempotency: acks after commit, and clientIds never stored twice.

A message is acked (``message_ack``) only once its batch has committed. A clientId seen
before is answered with the original's ack instead of being stored again: the in-flight
map and the Bloom filter of stored clientIds (:mod:`fastchat.seen`) answer without a
database read unless the filter says "maybe", which only then costs a (awaited) look-up.
"""

from __future__ import annotations

import logging
from collections.abc import Awaitable, Callable, Iterable
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from fastchat import protocol as p
from fastchat.errors import ChatError, Conflict, StorageUnavailable
from fastchat.protocol import event
from fastchat.seen import SeenClientIds
from fastchat.storage.base import Duplicate

if TYPE_CHECKING:
    from fastchat.fanout.hub import Hub
    from fastchat.metrics import Metrics
    from fastchat.ws.peer import Peer as Connection

log = logging.getLogger("fastchat.chat")


@dataclass(slots=True, eq=False)
class PendingAck:
    """A message on its way to the disk: the writer's ``on_done``, which acks it once stored.

    ``pending`` holds the message under ``ack["messageId"]`` until then; ``key`` is its
    ``"user id\\0clientId"``, if it has a clientId.

    One slotted object per message (rather than a closure and its cells) keeps the objects
    that live until the commit, and so the garbage collector's work, small.
    """

    acks: Acks
    conn: Connection
    key: str | None
    destination: str
    ack: dict[str, Any]
    pending: dict[str, Any]
    request_type: str
    resenders: list[Connection] | None = None
    resent: bool = False  # published before under its clientId: a Duplicate means stored

    def add_waiter(self, conn: Connection) -> None:
        """Ack ``conn`` too: it resent the clientId while the message was in flight."""
        if self.resenders is None:
            self.resenders = [conn]
        else:
            self.resenders.append(conn)

    def __call__(self, error: BaseException | None) -> None:
        self.acks.acked(self, error)


class Acks:
    """Messages in flight by clientId, the filter of stored ones, and the acks."""

    def __init__(self, hub: Hub, metrics: Metrics, stored_keys: Iterable[str]):
        self._hub = hub
        self._metrics = metrics
        # "user id\0client id" -> the message in flight under that clientId
        self._in_flight: dict[str, PendingAck] = {}
        self._seen = SeenClientIds(stored_keys)

    def known(self, key: str) -> bool:
        """Whether a message may exist under ``key``; False proves it new (no read)."""
        return key in self._in_flight or key in self._seen

    async def resend(
        self,
        conn: Connection,
        key: str,
        destination: str,
        stored: Callable[[], Awaitable[Any | None]],
        destination_of: Callable[[Any], str],
        request_type: str,
    ) -> bool:
        """A clientId seen before: re-ack (now, or on commit) instead of storing it twice.

        ``key`` is ``"user id\\0clientId"`` (the clientId prefixed by kind); ``destination``
        is the room or the DM's target: a clientId reused for somewhere else is refused.
        ``stored`` looks the stored row up, ``destination_of`` reads its destination.
        Returns False when no message has that clientId after all.
        """
        pending = self._in_flight.get(key)
        if pending is None and key not in self._seen:
            return False
        if pending is not None:
            if pending.destination != destination:
                raise Conflict(
                    "clientId already used for another message", request_type=request_type
                )
            pending.add_waiter(conn)  # still in flight: this connection is acked on commit too
            return True
        row = await stored()
        if row is None:
            return False
        if destination_of(row) != destination:
            raise Conflict("clientId already used for another message", request_type=request_type)
        ack = {
            "clientId": row.client_id,
            "messageId": row.id,
            "seq": row.seq,
            "timestamp": row.created_at,
        }
        self._hub.send(conn, event("message_ack", ack))
        return True

    def confirm(self, conn: Connection, event_type: str, data: dict[str, Any]) -> None:
        """Acknowledge a committed change (an edit, a delete) to the connection that made it."""
        self._hub.send(conn, event(event_type, data))

    def in_flight(self, done: PendingAck) -> PendingAck:
        """Register a message handed to the writer; ``done`` acks it once committed."""
        if done.key is not None:
            self._in_flight[done.key] = done
            self._seen.add(done.key)
        return done

    def refuse(self, conn: Connection, error: ChatError) -> None:
        """Tell the sender its message was not accepted (nothing was stored or delivered)."""
        self._metrics.errors_sent += 1
        self._hub.send(conn, p.error_event(error))

    def acked(self, done: PendingAck, error: BaseException | None) -> None:
        done.pending.pop(done.ack["messageId"], None)
        if done.key is not None:
            self._in_flight.pop(done.key, None)
        waiters = (done.conn,) if done.resenders is None else (done.conn, *done.resenders)
        if error is not None and not (done.resent and isinstance(error, Duplicate)):
            log.error("message %s was not stored: %s", done.ack["messageId"], error)
            failure = StorageUnavailable(
                "Message could not be stored", request_type=done.request_type
            )
            for waiter in waiters:
                self._metrics.errors_sent += 1
                self._hub.send(waiter, p.error_event(failure))
            return
        self._metrics.messages_acked += 1
        payload = event("message_ack", done.ack)
        for waiter in waiters:
            if not waiter.closed:
                self._hub.send(waiter, payload)
