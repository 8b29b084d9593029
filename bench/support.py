"""Helpers shared by the microbenchmarks: typical payloads, configs, fake sockets, members."""

from __future__ import annotations

import uuid
from pathlib import Path
from typing import Any

from fastchat.clock import utc_now_iso
from fastchat.config import AuthConfig, Config, StorageConfig, WebSocketConfig
from fastchat.fanout.hub import Hub
from fastchat.metrics import Metrics
from fastchat.protocol import event, message_json
from fastchat.ws.connection import Connection
from fastchat.ws.deflate import ContextDeflater
from fastchat.ws.peer import DEDICATED, PLAIN
from tests.support.transports import CountingTransport

ROOM_SIZE = 1000
USER_ID = "6f1c2d4e-8a9b-4c3d-9e2f-1a2b3c4d5e6f"
ROOM_ID = "general"
# A chat line of ordinary length: the encoded new_message event is ~440 bytes, above the
# default compression threshold (256), so shared deflate applies to it.
CONTENT = "Has anyone tried the new release yet? The fan-out numbers look really promising."


def message_dict(seq: int, content: str = CONTENT) -> dict[str, Any]:
    """A room message built as the chat builds it (``protocol.message_json``)."""
    return message_json(
        str(uuid.uuid4()),
        seq,
        ROOM_ID,
        USER_ID,
        "alice_wonder",
        None,
        content,
        "text",
        None,
        str(uuid.uuid4()),
        utc_now_iso(),
        False,
    )


def new_message_event(seq: int) -> bytes:
    """The encoded ``new_message`` broadcast, as the chat encodes it."""
    return event("new_message", {"message": message_dict(seq)})


def bench_config(data_dir: Path, **storage: Any) -> Config:
    """A Config whose data lives in ``data_dir``; ``storage`` overrides StorageConfig fields."""
    return Config(
        storage=StorageConfig(
            path=data_dir / "fastchat.db", uploads_dir=data_dir / "uploads", **storage
        ),
        auth=AuthConfig(jwt_secret="b" * 32, bcrypt_rounds=4, bcrypt_threads=1),
    )


def make_members(
    hub: Hub, metrics: Metrics, count: int = ROOM_SIZE, compress: int = PLAIN
) -> list[Connection]:
    """``count`` real Connections over fake transports, authenticated as distinct users."""
    config = WebSocketConfig()
    members = []
    for i in range(count):
        conn = Connection(
            hub,
            None,  # type: ignore[arg-type]  # no incoming frames in these benchmarks
            config,
            metrics,
            client=f"10.0.{i // 250}.{i % 250}",
            compress=compress,
            deflater=ContextDeflater(15) if compress == DEDICATED else None,
        )
        conn.raw = CountingTransport()  # type: ignore[assignment]
        conn.user_id = f"user-{i}"
        members.append(conn)
    return members
