"""Protocol hot paths: parsing a client frame, encoding a broadcast, the event timestamp."""

from __future__ import annotations

import orjson
import pytest

from bench.support import CONTENT, message_dict
from fastchat import clock, protocol


@pytest.mark.benchmark(group="protocol")
def test_parse_send_message(benchmark, send_message_bytes: bytes) -> None:
    cmd = benchmark(protocol.parse, send_message_bytes)
    assert isinstance(cmd, protocol.SendMessage)
    assert cmd.content == CONTENT


@pytest.mark.benchmark(group="protocol")
def test_encode_new_message(benchmark) -> None:
    message = message_dict(42)

    def encode() -> bytes:
        return orjson.dumps({"type": "new_message", "data": {"message": message}})

    payload = benchmark(encode)
    assert orjson.loads(payload)["data"]["message"]["seq"] == 42


@pytest.mark.benchmark(group="protocol")
def test_utc_now_iso(benchmark) -> None:
    stamp = benchmark(clock.utc_now_iso)
    assert len(stamp) == 24
    assert stamp.endswith("Z")
