"""Locust chat users for fastchat: realistic traffic over HTTP + WebSocket (websocket-client).

Each user registers over HTTP, authenticates on ``/ws``, joins a spread of rooms (the big
``general``/``random``/``tech`` rooms and small rooms created on the fly), then chats at
human rates: messages, typing, history, DMs, and now and then a reconnect that catches up
with ``join_room {since}``. Every round trip is reported to Locust as a ``WS`` request:
``send→message_ack``, ``send→new_message``, ``get_room_history→room_history``,
``private_message→private_message_sent``, ``reconnect→room_joined``.

``FASTCHAT_SOAK=1`` makes reconnects frequent and abrupt (the socket is dropped without a
close frame), for soak runs. Run (locust lives in its own venv, see loadtest/README.md):
``locust -f loadtest/locustfile.py --headless -u 50 -r 10 -t 30s --host http://127.0.0.1:3000``
"""

from __future__ import annotations

import json
import os
import random
import socket
import time
import uuid
from typing import Any

import gevent
import websocket
from gevent.event import AsyncResult
from locust import HttpUser, between, events, task

SOAK = os.environ.get("FASTCHAT_SOAK") == "1"
BIG_ROOMS = ("general", "random", "tech")
REPLY_TIMEOUT = 10.0
PASSWORD = "locust-password"

# Shared by all users of this worker: who is online and which small rooms exist.
online_users: dict[str, str] = {}
small_rooms: list[str] = []


def new_client_id() -> str:
    """A clientId as the browser client makes one (``newClientId`` in static/js/store.js): the
    UUIDv7 layout, 48-bit Unix milliseconds then random bits."""
    value = (time.time_ns() // 1_000_000) << 80 | random.getrandbits(80)
    value = value & ~(0xF << 76) | 0x7 << 76  # version 7
    value = value & ~(0x3 << 62) | 0x2 << 62  # RFC 9562 variant
    return str(uuid.UUID(int=value))


class ReplyTimeout(Exception):
    """The server did not answer within REPLY_TIMEOUT."""


class ServerError(Exception):
    """The server answered with an ``error`` event."""


class ChatUser(HttpUser):
    """One person chatting in a browser tab."""

    wait_time = between(2, 8)

    def on_start(self) -> None:
        self.user_id = ""
        self.token = ""
        self.ws: websocket.WebSocket | None = None
        self.reader: gevent.Greenlet | None = None
        self.rooms: list[str] = []
        self.last_seq: dict[str, int] = {}
        self.waiters: dict[tuple[str, str], AsyncResult] = {}
        self.register()
        self.connect()
        self.join_initial_rooms()

    def on_stop(self) -> None:
        online_users.pop(self.user_id, None)
        self.disconnect()

    # --- HTTP -----------------------------------------------------------------------------

    def register(self) -> None:
        username = f"lc{uuid.uuid4().hex[:12]}"
        body = {"username": username, "email": f"{username}@locust.test", "password": PASSWORD}
        for _ in range(20):
            with self.client.post(
                "/api/auth/register", json=body, name="/api/auth/register", catch_response=True
            ) as response:
                if response.status_code == 429:
                    response.success()  # the limiter working as designed; wait and retry
                    gevent.sleep(float(response.headers.get("Retry-After", "1")))
                    continue
                if response.status_code != 201:
                    response.failure(f"HTTP {response.status_code}")
                    raise RuntimeError(f"register failed: {response.status_code}")
                reply = response.json()
                self.user_id, self.token = reply["user"]["id"], reply["token"]
                return
        raise RuntimeError("register: still rate limited")

    # --- WebSocket plumbing ---------------------------------------------------------------

    def connect(self) -> None:
        url = (
            self.host.replace("http://", "ws://").replace("https://", "wss://").rstrip("/") + "/ws"
        )
        self.ws = websocket.create_connection(url, timeout=REPLY_TIMEOUT, enable_multithread=True)
        self.reader = gevent.spawn(self.read_loop, self.ws)
        self.call(
            {"type": "authenticate", "token": self.token}, ("authenticated", ""), "authenticate"
        )
        online_users[self.user_id] = self.user_id

    def disconnect(self, abrupt: bool = False) -> None:
        ws, self.ws = self.ws, None
        if ws is None:
            return
        if abrupt and ws.sock is not None:
            ws.sock.shutdown(socket.SHUT_RDWR)  # no close frame: like a dropped network
            ws.sock.close()
        else:
            ws.close()
        if self.reader is not None:
            self.reader.kill(block=False)

    def read_loop(self, ws: websocket.WebSocket) -> None:
        while True:
            try:
                raw = ws.recv()
            except (websocket.WebSocketException, OSError):
                return
            if not raw:
                return
            self.dispatch(json.loads(raw))

    def dispatch(self, event: dict[str, Any]) -> None:
        kind, data = event.get("type"), event.get("data") or {}
        if kind == "new_message":
            message = data["message"]
            room = message["roomId"]
            self.last_seq[room] = max(self.last_seq.get(room, 0), message["seq"])
            if message["userId"] == self.user_id:
                self.resolve(("new_message", message.get("clientId") or ""), data)
        elif kind in ("message_ack", "private_message_sent"):
            self.resolve((kind, data.get("clientId") or ""), data)
        elif kind in ("room_history", "room_joined"):
            self.resolve((kind, data.get("roomId", "")), data)
        elif kind == "room_created":
            self.resolve((kind, data["room"]["name"]), data)
        elif kind == "authenticated":
            self.resolve((kind, ""), data)
        elif kind == "error":
            self.fail_pending(data)

    def resolve(self, key: tuple[str, str], data: dict) -> None:
        waiter = self.waiters.pop(key, None)
        if waiter is not None:
            waiter.set((data, time.perf_counter()))  # arrival time: replies may be read late

    def fail_pending(self, data: dict) -> None:
        """An ``error`` fails the waiters of the request type it names (all if none)."""
        request_type = data.get("type")
        error = ServerError(f"{data.get('code')}: {data.get('message')}")
        for key in list(self.waiters):
            if request_type is None or _REPLY_TO.get(key[0]) == request_type:
                self.waiters.pop(key).set_exception(error)

    def expect(self, key: tuple[str, str]) -> AsyncResult:
        waiter = AsyncResult()
        self.waiters[key] = waiter
        return waiter

    def send(self, message: dict) -> None:
        if self.ws is None:
            self.connect()
        assert self.ws is not None
        self.ws.send(json.dumps(message))

    def report(self, name: str, started: float, reply: tuple[dict | None, float]) -> None:
        data, arrived = reply
        events.request.fire(
            request_type="WS",
            name=name,
            response_time=(arrived - started) * 1000,
            response_length=len(json.dumps(data)) if data else 0,
            exception=None,
            context={},
        )

    def report_error(self, name: str, started: float, error: Exception) -> None:
        events.request.fire(
            request_type="WS",
            name=name,
            response_time=(time.perf_counter() - started) * 1000,
            response_length=0,
            exception=error,
            context={},
        )

    def wait(self, name: str, started: float, waiter: AsyncResult) -> dict | None:
        """Wait for one reply and report it (or its timeout / error) to Locust."""
        try:
            reply = waiter.get(timeout=REPLY_TIMEOUT)
        except gevent.Timeout:
            self.report_error(name, started, ReplyTimeout(f"no reply in {REPLY_TIMEOUT}s"))
            return None
        except ServerError as error:
            self.report_error(name, started, error)
            return None
        self.report(name, started, reply)
        return reply[0]

    def call(self, message: dict, key: tuple[str, str], name: str) -> dict | None:
        """Send ``message``, wait for the reply ``key`` and report the round trip."""
        waiter = self.expect(key)
        started = time.perf_counter()
        self.send(message)
        return self.wait(name, started, waiter)

    # --- behaviour ------------------------------------------------------------------------

    def join_initial_rooms(self) -> None:
        rooms = ["general", *random.sample(BIG_ROOMS[1:], random.randint(0, 2))]
        if small_rooms and random.random() < 0.7:
            rooms.append(random.choice(small_rooms))
        elif random.random() < 0.3:
            name = f"room-{uuid.uuid4().hex[:8]}"
            create = {
                "type": "create_room",
                "name": name,
                "description": "locust",
                "isPrivate": False,
            }
            created = self.call(create, ("room_created", name), "create_room→room_created")
            if created is not None:
                small_rooms.append(created["room"]["id"])
                rooms.append(created["room"]["id"])
        for room in rooms:
            join = {"type": "join_room", "roomId": room}
            if self.call(join, ("room_joined", room), "join_room→room_joined") is not None:
                self.rooms.append(room)

    @task(10)
    def send_message(self) -> None:
        if not self.rooms:
            return
        room = random.choice(self.rooms)
        client_id = new_client_id()
        ack = self.expect(("message_ack", client_id))
        echo = self.expect(("new_message", client_id))
        content = random.choice(("hi", "lol", "anyone here?", "x" * random.randint(10, 300)))
        started = time.perf_counter()
        self.send(
            {"type": "send_message", "roomId": room, "content": content, "clientId": client_id}
        )
        self.wait("send→new_message", started, echo)
        self.wait("send→message_ack", started, ack)

    @task(4)
    def typing(self) -> None:
        if self.rooms:
            room = random.choice(self.rooms)
            self.send({"type": "typing_start", "roomId": room})
            gevent.sleep(random.uniform(0.5, 2.0))
            self.send({"type": "typing_stop", "roomId": room})

    @task(2)
    def history(self) -> None:
        if self.rooms:
            room = random.choice(self.rooms)
            request = {"type": "get_room_history", "roomId": room, "limit": 50}
            self.call(request, ("room_history", room), "get_room_history→room_history")

    @task(2)
    def direct_message(self) -> None:
        others = [uid for uid in online_users if uid != self.user_id]
        if not others:
            return
        client_id = new_client_id()
        message = {
            "type": "private_message",
            "targetUserId": random.choice(others),
            "content": "psst",
            "clientId": client_id,
        }
        self.call(
            message, ("private_message_sent", client_id), "private_message→private_message_sent"
        )

    @task(5 if SOAK else 1)
    def reconnect(self) -> None:
        """Drop the connection and come back, catching up on each room with ``since``."""
        self.disconnect(abrupt=SOAK or random.random() < 0.3)
        self.waiters.clear()
        self.connect()
        for room in self.rooms:
            join = {"type": "join_room", "roomId": room, "since": self.last_seq.get(room, 0)}
            self.call(join, ("room_joined", room), "reconnect→room_joined")


# Which request an awaited reply answers (an ``error`` names the request type).
_REPLY_TO = {
    "authenticated": "authenticate",
    "room_joined": "join_room",
    "room_created": "create_room",
    "message_ack": "send_message",
    "new_message": "send_message",
    "room_history": "get_room_history",
    "private_message_sent": "private_message",
}
