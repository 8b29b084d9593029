"""Server frames checked against a reference parser written here and against websockets'."""

from __future__ import annotations

import struct
from dataclasses import dataclass

import pytest
from hypothesis import given
from hypothesis import strategies as st
from websockets.frames import Close, Frame
from websockets.streams import StreamReader

from fastchat.ws.frames import (
    OP_BINARY,
    OP_CLOSE,
    OP_CONTINUATION,
    OP_PING,
    OP_PONG,
    OP_TEXT,
    build_close_frame,
    build_frame,
    frame_payload,
)

LENGTHS = [0, 1, 125, 126, 127, 65535, 65536, 70000]
DATA_OPCODES = [OP_CONTINUATION, OP_TEXT, OP_BINARY]


@dataclass
class Parsed:
    fin: bool
    rsv1: bool
    opcode: int
    header_size: int
    payload: bytes


def parse(frame: bytes) -> Parsed:
    """RFC 6455 §5.2, strictly: one whole unmasked frame, minimal length encoding."""
    first, second = frame[0], frame[1]
    assert first & 0x30 == 0, "RSV2/RSV3 set"
    assert second & 0x80 == 0, "server frames must not be masked"
    length = second & 0x7F
    header_size = 2
    if length == 126:
        (length,) = struct.unpack("!H", frame[2:4])
        header_size = 4
        assert length >= 126, "16-bit length used for a short payload"
    elif length == 127:
        (length,) = struct.unpack("!Q", frame[2:10])
        header_size = 10
        assert 65536 <= length < 2**63, "64-bit length used for a medium payload"
    payload = frame[header_size:]
    assert len(payload) == length, "frame is not exactly header + payload"
    return Parsed(bool(first & 0x80), bool(first & 0x40), first & 0x0F, header_size, payload)


def parse_with_websockets(frame: bytes) -> Frame:
    reader = StreamReader()
    reader.feed_data(frame)
    reader.feed_eof()
    parser = Frame.parse(reader.read_exact, mask=False)
    with pytest.raises(StopIteration) as done:
        next(parser)
    assert reader.buffer == b"", "bytes left after the frame"
    return done.value.value


@pytest.mark.parametrize("length", LENGTHS)
@pytest.mark.parametrize("rsv1", [False, True])
@pytest.mark.parametrize("opcode", DATA_OPCODES)
def test_data_frame_layout(length: int, rsv1: bool, opcode: int) -> None:
    payload = bytes(range(256)) * (length // 256) + bytes(length % 256)
    frame = build_frame(payload, opcode, rsv1=rsv1)
    header_size = 2 if length < 126 else 4 if length < 65536 else 10
    assert parse(frame) == Parsed(True, rsv1, opcode, header_size, payload)
    assert type(frame) is bytes


@pytest.mark.parametrize("length", LENGTHS)
def test_websockets_reads_our_frames(length: int) -> None:
    payload = b"x" * length
    frame = parse_with_websockets(build_frame(payload, OP_BINARY))
    assert (frame.opcode.value, frame.fin, bytes(frame.data)) == (OP_BINARY, True, payload)


@pytest.mark.parametrize("length", LENGTHS)
@pytest.mark.parametrize("rsv1", [False, True])
def test_frame_payload_gives_back_what_was_framed(length: int, rsv1: bool) -> None:
    payload = bytes(range(256)) * (length // 256) + bytes(length % 256)
    assert frame_payload(build_frame(payload, rsv1=rsv1)) == payload


def test_default_is_final_text_frame() -> None:
    assert build_frame(b"hi") == b"\x81\x02hi"


def test_fragments() -> None:
    first = parse(build_frame(b"ab", OP_TEXT, rsv1=True, fin=False))
    last = parse(build_frame(b"cd", OP_CONTINUATION))
    assert (first.fin, first.rsv1, first.opcode) == (False, True, OP_TEXT)
    assert (last.fin, last.rsv1, last.opcode) == (True, False, OP_CONTINUATION)


@pytest.mark.parametrize("opcode", [OP_PING, OP_PONG, OP_CLOSE])
def test_control_frames(opcode: int) -> None:
    assert parse(build_frame(b"p" * 125, opcode)).payload == b"p" * 125
    with pytest.raises(ValueError, match="125"):
        build_frame(b"p" * 126, opcode)


@given(payload=st.binary(max_size=400), rsv1=st.booleans(), fin=st.booleans())
def test_any_payload(payload: bytes, rsv1: bool, fin: bool) -> None:
    parsed = parse(build_frame(payload, OP_BINARY, rsv1=rsv1, fin=fin))
    assert parsed == Parsed(fin, rsv1, OP_BINARY, parsed.header_size, payload)


@given(length=st.integers(min_value=0, max_value=200_000))
def test_any_length(length: int) -> None:
    assert parse(build_frame(bytes(length))).payload == bytes(length)


# --- close frames ---------------------------------------------------------------------------


def close_of(frame: bytes) -> tuple[int, str]:
    parsed = parse(frame)
    assert (parsed.fin, parsed.rsv1, parsed.opcode) == (True, False, OP_CLOSE)
    close = Close.parse(parsed.payload)  # websockets checks the code and the UTF-8
    return close.code, close.reason


def test_close_frame() -> None:
    assert build_close_frame(1000) == b"\x88\x02\x03\xe8"
    assert close_of(build_close_frame(4001, "auth timeout")) == (4001, "auth timeout")


def test_close_reason_truncated_on_a_character_boundary() -> None:
    # 41 three-byte characters fill exactly 123 bytes; a 42nd cannot be cut in half.
    assert close_of(build_close_frame(1008, "€" * 42)) == (1008, "€" * 41)
    # "a" shifts the boundary into the middle of a character.
    assert close_of(build_close_frame(1008, "a" + "€" * 42)) == (1008, "a" + "€" * 40)


@given(reason=st.text(max_size=200))
def test_close_reason_any_text(reason: str) -> None:
    frame = build_close_frame(1001, reason)
    code, got = close_of(frame)
    assert code == 1001
    assert reason.startswith(got)
    assert len(got.encode()) <= 123
    if got != reason:  # truncated: the next character would not have fitted
        assert len(reason[: len(got) + 1].encode()) > 123


@pytest.mark.parametrize("code", [0, 999, 1004, 1005, 1006, 1015, 1016, 2999, 5000])
def test_close_codes_that_cannot_be_sent(code: int) -> None:
    with pytest.raises(ValueError):
        build_close_frame(code)


@pytest.mark.parametrize("code", [1000, 1001, 1002, 1003, 1007, 1009, 1011, 1013, 3000, 4999])
def test_close_codes_that_can_be_sent(code: int) -> None:
    assert close_of(build_close_frame(code))[0] == code
