"""WebSocket frames by hand (RFC 6455 section 5): build client frames, decode any frame.

The opcodes are re-exported from :mod:`fastchat.ws.frames` so a test imports frame
helpers from one place.
"""

from __future__ import annotations

import random
import struct
import zlib
from dataclasses import dataclass

from fastchat.ws.frames import (  # noqa: F401  (re-exported)
    OP_BINARY,
    OP_CLOSE,
    OP_CONTINUATION,
    OP_PING,
    OP_PONG,
    OP_TEXT,
)

TAIL = b"\x00\x00\xff\xff"  # what permessage-deflate strips from every message


@dataclass(frozen=True, slots=True)
class Frame:
    """One frame: its parsed fields, its payload (unmasked) and its exact bytes."""

    fin: bool
    rsv1: bool
    opcode: int
    payload: bytes
    raw: bytes
    masked: bool = False

    @property
    def close_code(self) -> int | None:
        if self.opcode != OP_CLOSE:
            return None
        return struct.unpack("!H", self.payload[:2])[0] if len(self.payload) >= 2 else 1005


def mask(payload: bytes, key: bytes) -> bytes:
    """XOR ``payload`` with the 4-byte masking ``key`` (RFC 6455 section 5.3)."""
    n = len(payload)
    if not n:
        return b""
    keystream = (key * (n // 4 + 1))[:n]
    return (int.from_bytes(payload, "big") ^ int.from_bytes(keystream, "big")).to_bytes(n, "big")


def frame_bytes(first_byte: int, payload: bytes, key: bytes | None = None) -> bytes:
    """A frame with this first byte (FIN, RSV, opcode), the shortest length encoding, and
    ``payload`` masked with ``key`` when one is given (a client's frame) or not (a server's)."""
    mask_bit = 0x80 if key is not None else 0
    n = len(payload)
    if n < 126:
        header = struct.pack("!BB", first_byte, mask_bit | n)
    elif n < 65536:
        header = struct.pack("!BBH", first_byte, mask_bit | 126, n)
    else:
        header = struct.pack("!BBQ", first_byte, mask_bit | 127, n)
    if key is None:
        return header + payload
    return header + key + mask(payload, key)


def client_frame(
    opcode: int,
    payload: bytes,
    *,
    fin: bool = True,
    rsv1: bool = False,
    rsv2: bool = False,
    rsv3: bool = False,
    masked: bool = True,
) -> bytes:
    """A client-to-server frame, masked unless told otherwise.

    The masking key only has to be unknown to the peer's cache layers, not secret: a fast
    non-cryptographic one keeps the load generators' sending cheap.
    """
    first = (0x80 if fin else 0) | (0x40 if rsv1 else 0) | opcode
    first |= (0x20 if rsv2 else 0) | (0x10 if rsv3 else 0)
    return frame_bytes(first, payload, random.randbytes(4) if masked else None)


def parse_frame(data: bytes | bytearray, start: int = 0) -> Frame | None:
    """The frame that begins at ``data[start]``, unmasked; None while ``data`` ends inside it."""
    end = len(data)
    if end - start < 2:
        return None
    first, second = data[start], data[start + 1]
    length, offset = second & 0x7F, start + 2
    if length >= 126:
        size = 2 if length == 126 else 8
        if end < offset + size:
            return None
        length, offset = int.from_bytes(data[offset : offset + size], "big"), offset + size
    masked = bool(second & 0x80)
    key = bytes(data[offset : offset + 4]) if masked else b""
    offset += len(key)
    if len(key) < 4 * masked or end < offset + length:
        return None
    raw = bytes(data[start : offset + length])
    payload = raw[offset - start :]
    return Frame(
        fin=bool(first & 0x80),
        rsv1=bool(first & 0x40),
        opcode=first & 0x0F,
        payload=mask(payload, key) if masked else payload,
        raw=raw,
        masked=masked,
    )


def split_frames(data: bytes | bytearray) -> list[Frame]:
    """Every frame in ``data``, which must hold whole frames only."""
    frames, pos = [], 0
    while pos < len(data):
        frame = parse_frame(data, pos)
        assert frame is not None, f"the data ends inside a frame at byte {pos}"
        frames.append(frame)
        pos += len(frame.raw)
    return frames


def compress_message(payload: bytes) -> bytes:
    """``payload`` as a permessage-deflate message body (raw deflate without the tail)."""
    compressor = zlib.compressobj(9, zlib.DEFLATED, -15)
    data = compressor.compress(payload) + compressor.flush(zlib.Z_SYNC_FLUSH)
    assert data.endswith(TAIL)
    return data[:-4]
