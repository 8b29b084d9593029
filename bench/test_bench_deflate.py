"""permessage-deflate: one shared compression per broadcast against one per member.

The two ``deflate-broadcast`` benchmarks send the same event to a 1,000-member room; their
ratio is what ``compression = "shared"`` saves over ``"dedicated"``.
"""

from __future__ import annotations

import zlib

import pytest

from bench.support import ROOM_SIZE, new_message_event
from fastchat.ws.deflate import ContextDeflater, Inflater, SharedDeflater
from fastchat.ws.frames import build_frame
from tests.support.frames import TAIL, parse_frame


def _decode(compressed: bytes) -> bytes:
    return zlib.decompressobj(-15).decompress(compressed + TAIL)


@pytest.mark.benchmark(group="deflate-broadcast-1000")
def test_shared_deflate_once_per_broadcast(benchmark) -> None:
    payload = new_message_event(1)
    deflater = SharedDeflater(15)

    def broadcast() -> bytes:
        return build_frame(deflater.compress(payload), rsv1=True)

    frame = benchmark(broadcast)
    assert frame[0] & 0x40  # RSV1: compressed
    assert _decode(parse_frame(frame).payload) == payload  # type: ignore[union-attr]


@pytest.mark.benchmark(group="deflate-broadcast-1000")
def test_dedicated_deflate_per_member(benchmark) -> None:
    payload = new_message_event(1)
    deflaters = [ContextDeflater(15) for _ in range(ROOM_SIZE)]

    def broadcast() -> list[bytes]:
        return [build_frame(d.compress(payload), rsv1=True) for d in deflaters]

    frames = benchmark(broadcast)
    assert len(frames) == ROOM_SIZE
    assert all(frame[0] & 0x40 for frame in frames)


@pytest.mark.benchmark(group="inflate")
def test_inflate_client_message(benchmark, send_message_bytes: bytes) -> None:
    # As a browser sends it with client_no_context_takeover: a fresh stream, tail removed.
    client = zlib.compressobj(6, zlib.DEFLATED, -15)
    data = (client.compress(send_message_bytes) + client.flush(zlib.Z_SYNC_FLUSH))[:-4]
    inflater = Inflater(64 * 1024, context_takeover=False)
    message = benchmark(inflater.inflate, data)
    assert message == send_message_bytes
