"""The picows WebSocket chat client of the end-to-end tests."""

from __future__ import annotations

import asyncio
import uuid
from typing import Any

import orjson
from picows import WSCloseCode, WSFrame, WSListener, WSMsgType, WSTransport, ws_connect

from tests.support.accounts import register
from tests.support.waiting import is_event


class _Listener(WSListener):
    def __init__(self) -> None:
        self.events: asyncio.Queue[dict[str, Any]] = asyncio.Queue()
        self.closed = asyncio.get_running_loop().create_future()
        self.close_code: int | None = None
        self.raw_frames: list[bytes] = []
        self.keep_raw = False

    def on_ws_frame(self, transport: WSTransport, frame: WSFrame) -> None:
        if frame.msg_type == WSMsgType.TEXT:
            payload = frame.get_payload_as_bytes()
            if self.keep_raw:
                self.raw_frames.append(payload)
            self.events.put_nowait(orjson.loads(payload))
        elif frame.msg_type == WSMsgType.CLOSE:
            self.close_code = frame.get_close_code().value if frame.payload_size >= 2 else 1005
            transport.send_close(WSCloseCode.OK)
            transport.disconnect()

    def on_ws_disconnected(self, transport: WSTransport) -> None:
        if not self.closed.done():
            self.closed.set_result(self.close_code)


class ChatClient:
    """A picows WebSocket client that queues every server event for the test to await."""

    def __init__(self, transport: WSTransport, listener: _Listener):
        self.transport = transport
        self._listener = listener
        self.seen: list[dict[str, Any]] = []

    @classmethod
    async def open(cls, ws_url: str, **kwargs: Any) -> ChatClient:
        """A connected client that has not waited for ``connection_established``."""
        transport, listener = await ws_connect(_Listener, ws_url, **kwargs)
        return cls(transport, listener)  # type: ignore[arg-type]

    @classmethod
    async def connect(cls, ws_url: str, token: str | None = None, **kwargs: Any) -> ChatClient:
        """A connected client past ``connection_established``, authenticated with ``token``."""
        client = await cls.open(ws_url, **kwargs)
        hello = await client.expect("connection_established")
        assert "timestamp" in hello
        if token is not None:
            await client.authenticate(token)
        return client

    async def authenticate(self, token: str) -> dict[str, Any]:
        self.send(type="authenticate", token=token)
        return await self.expect("authenticated")

    def send(self, **message: Any) -> None:
        self.transport.send(WSMsgType.TEXT, orjson.dumps(message))

    def send_raw(self, data: bytes, msg_type: WSMsgType = WSMsgType.TEXT, **kwargs: Any) -> None:
        self.transport.send(msg_type, data, **kwargs)

    async def next(self, timeout: float = 5.0) -> dict[str, Any]:
        event = await asyncio.wait_for(self._listener.events.get(), timeout)
        self.seen.append(event)
        return event

    async def expect(self, event_type: str, timeout: float = 5.0, **match: Any) -> dict[str, Any]:
        """Skip events until one of ``event_type`` (whose data has ``match``) arrives; its data."""
        loop = asyncio.get_running_loop()
        deadline = loop.time() + timeout
        while True:
            remaining = deadline - loop.time()
            try:
                event = await self.next(max(remaining, 0))
            except TimeoutError:
                raise AssertionError(
                    f"no {event_type} {match} within {timeout}s; last seen: {self.seen[-5:]}"
                ) from None
            if is_event(event, event_type, match):
                return event["data"]

    async def expect_error(self, code: str, timeout: float = 5.0) -> dict[str, Any]:
        return await self.expect("error", timeout, code=code)

    async def closed(self, timeout: float = 5.0) -> int | None:
        """Wait for the server to close the connection; the close code it sent."""
        return await asyncio.wait_for(asyncio.shield(self._listener.closed), timeout)

    def keep_raw(self) -> list[bytes]:
        self._listener.keep_raw = True
        return self._listener.raw_frames

    def drain(self) -> list[dict[str, Any]]:
        """Events already received and not yet read."""
        events = []
        while not self._listener.events.empty():
            events.append(self._listener.events.get_nowait())
        self.seen.extend(events)
        return events

    async def close(self) -> None:
        if not self.transport.is_disconnected:
            self.transport.send_close(WSCloseCode.OK)
            self.transport.disconnect()
            await self.transport.wait_disconnected()


async def joined(
    ws_url: str, base_url: str, room: str = "general"
) -> tuple[ChatClient, dict[str, Any]]:
    """A registered, authenticated client that has joined ``room``."""
    account = register(base_url)
    client = await ChatClient.connect(ws_url, account["token"])
    client.send(type="join_room", roomId=room)
    await client.expect("room_joined", roomId=room)
    return client, account


async def private_room(owner: ChatClient, name: str = "Secret") -> str:
    """Create a private room as ``owner`` and join it; its id."""
    owner.send(type="create_room", name=name, isPrivate=True)
    room_id = (await owner.expect("room_created"))["room"]["id"]
    owner.send(type="join_room", roomId=room_id)
    await owner.expect("room_joined", roomId=room_id)
    return room_id


async def post(client: ChatClient, room_id: str, content: str, **fields: Any) -> dict[str, Any]:
    """Send a room message and wait for its ``message_ack`` (it is then stored); the ack."""
    client_id = f"c-{uuid.uuid4().hex}"
    client.send(type="send_message", roomId=room_id, content=content, clientId=client_id, **fields)
    return await client.expect("message_ack", clientId=client_id)
