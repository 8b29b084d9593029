"""Frame building: one header + payload concatenation per broadcast, at three sizes."""

from __future__ import annotations

import orjson
import pytest

from bench.support import message_dict
from fastchat.ws.frames import build_frame

SIZES = {"100B": 100, "1KiB": 1024, "64KiB": 64 * 1024}
HEADER = {"100B": 2, "1KiB": 4, "64KiB": 10}


@pytest.mark.benchmark(group="frames")
@pytest.mark.parametrize("size", SIZES)
def test_build_frame(benchmark, size: str) -> None:
    payload = b"x" * SIZES[size]
    frame = benchmark(build_frame, payload)
    assert len(frame) == SIZES[size] + HEADER[size]
    assert frame.endswith(payload)


@pytest.mark.benchmark(group="frames")
def test_encode_and_frame_new_message(benchmark) -> None:
    event = {"type": "new_message", "data": {"message": message_dict(7)}}

    def encode_and_frame() -> bytes:
        return build_frame(orjson.dumps(event))

    frame = benchmark(encode_and_frame)
    assert orjson.loads(frame[4:] if frame[1] == 126 else frame[2:]) == orjson.loads(
        orjson.dumps(event)  # the message's empty tuples come back as lists
    )
