"""A minimal room relay on the ``websockets`` library: the baseline fastchat is compared with.

No auth, no storage, no validation beyond what the benchmark needs: ``join_room`` adds the
connection to a room, ``send_message`` builds a fastchat-shaped ``new_message`` event,
serializes it once and hands it to :func:`websockets.asyncio.server.broadcast`, then acks
the sender. Run: ``python -m loadtest.ws_relay --port 0`` (prints its URL on stderr).
"""

from __future__ import annotations

import argparse
import datetime
import sys
import uuid

import orjson
import uvloop
from websockets.asyncio.server import ServerConnection, broadcast, serve
from websockets.exceptions import ConnectionClosed

rooms: dict[str, set[ServerConnection]] = {}
seqs: dict[str, int] = {}


def _now() -> str:
    return datetime.datetime.now(datetime.UTC).isoformat(timespec="milliseconds")[:-6] + "Z"


def _event(kind: str, data: dict) -> str:
    return orjson.dumps({"type": kind, "data": data}).decode()


async def handler(ws: ServerConnection) -> None:
    """Serve one connection until it closes."""
    user_id = str(uuid.uuid4())
    joined: set[str] = set()
    await ws.send(_event("connection_established", {"message": "relay", "timestamp": _now()}))
    try:
        async for raw in ws:
            try:
                msg = orjson.loads(raw)
                kind = msg["type"]
            except (orjson.JSONDecodeError, KeyError, TypeError):
                continue
            if kind == "authenticate":
                user = {"id": user_id, "username": user_id[:8], "avatar_url": None, "role": "user"}
                await ws.send(_event("authenticated", {"user": user, "rooms": []}))
            elif kind == "join_room":
                room_id = str(msg.get("roomId"))
                rooms.setdefault(room_id, set()).add(ws)
                joined.add(room_id)
                await ws.send(
                    _event("room_joined", {"roomId": room_id, "roomName": room_id, "members": []})
                )
            elif kind == "create_room":
                room = {
                    "id": str(uuid.uuid4()),
                    "name": msg.get("name"),
                    "description": None,
                    "is_private": False,
                    "member_count": 1,
                }
                await ws.send(_event("room_created", {"room": room}))
            elif kind == "send_message" and msg.get("roomId") in joined:
                await _publish(ws, user_id, msg)
    except ConnectionClosed:
        pass
    finally:
        for room_id in joined:
            rooms[room_id].discard(ws)


async def _publish(ws: ServerConnection, user_id: str, msg: dict) -> None:
    room_id = msg["roomId"]
    seqs[room_id] = seq = seqs.get(room_id, 0) + 1
    timestamp = _now()
    message = {
        "id": str(uuid.uuid4()),
        "seq": seq,
        "roomId": room_id,
        "userId": user_id,
        "username": user_id[:8],
        "avatar_url": None,
        "content": msg.get("content", ""),
        "messageType": "text",
        "replyTo": None,
        "clientId": msg.get("clientId"),
        "timestamp": timestamp,
        "edited": False,
    }
    broadcast(rooms[room_id], _event("new_message", {"message": message}))
    ack = {
        "clientId": message["clientId"],
        "messageId": message["id"],
        "seq": seq,
        "timestamp": timestamp,
    }
    await ws.send(_event("message_ack", ack))


async def main(host: str, port: int) -> None:
    async with serve(handler, host, port, max_queue=64, backlog=4096) as server:
        bound = server.sockets[0].getsockname()
        print(f"relay listening on ws://{bound[0]}:{bound[1]}/ws", file=sys.stderr, flush=True)
        await server.serve_forever()


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--port", type=int, default=3001)
    args = parser.parse_args()
    uvloop.run(main(args.host, args.port))
