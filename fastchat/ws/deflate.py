"""permessage-deflate (RFC 7692): offer negotiation, outgoing compression, bounded inflation.

Pure code: no sockets, no event loop. The upgrade handler calls :func:`negotiate`; the hub
compresses broadcasts once with a :class:`SharedDeflater` (or per connection with a
:class:`ContextDeflater`); each connection inflates incoming messages with an
:class:`Inflater` that never materialises more than its size limit.
"""

from __future__ import annotations

import functools
import re
import zlib
from dataclasses import dataclass
from typing import Any

from fastchat.config import Compression
from fastchat.errors import CloseCode

EXTENSION_NAME = "permessage-deflate"

# Level 1 versus 6, measured on this machine with one compressobj per message stream
# (zlib 1.2.13): a 175-293 byte JSON chat event takes ~11-12 us either way (the per-flush
# Huffman tree build dominates) and shrinks to 69% (L1) or 68% (L6); a 4 KiB history page
# takes 21 us at L1 (26% of its size) against 40 us at L6 (24%). Level 1: half the CPU
# for a few more bytes.
COMPRESSION_LEVEL = 1
# A dedicated compressor lives as long as its connection, so it is sized for memory: on a
# stream of 300 chat events, window 2^11 and memLevel 3 compress to 18.3% of the input
# with 18 KiB of zlib state, against 15.2% with 150 KiB for window 2^15 and memLevel 5.
# A smaller window than negotiated needs no announcing: the peer's inflater decodes any
# stream made with a window up to the negotiated one.
_CONTEXT_WINDOW_BITS = 11
_CONTEXT_MEM_LEVEL = 3
_SHARED_MEM_LEVEL = 8

# RFC 7692 §7.2.1: the sender removes, and §7.2.2 the receiver appends, this tail.
_TAIL = b"\x00\x00\xff\xff"

# §7.1.2: window bits are 8..15 written without leading zeros. zlib cannot produce raw
# deflate with an 8-bit window (https://github.com/madler/zlib/issues/171).
_WINDOW_BITS = {str(bits): bits for bits in range(8, 16)}
_MIN_SERVER_WINDOW_BITS = 9
_FLAGS = ("server_no_context_takeover", "client_no_context_takeover")
_PARAMETERS = frozenset((*_FLAGS, "server_max_window_bits", "client_max_window_bits"))


class ExtensionHeaderError(ValueError):
    """A Sec-WebSocket-Extensions header that does not parse at all (answer 400)."""


class InflateError(Exception):
    """An incoming compressed message that ends the connection with ``close_code``."""

    close_code = CloseCode.PROTOCOL_ERROR
    reason = "invalid compressed data"  # the close frame's reason text (docs/protocol.md)


class MessageTooBig(InflateError):
    """The inflated message would exceed the size limit."""

    close_code = CloseCode.MESSAGE_TOO_BIG
    reason = "message too big"


class InvalidCompressedData(InflateError):
    """The message payload is not valid deflate data (RFC 7692 §8: fail the connection)."""


@dataclass(frozen=True, slots=True)
class Negotiated:
    """An accepted permessage-deflate offer and the response header that accepts it."""

    response_header: str
    server_no_context_takeover: bool
    server_max_window_bits: int
    client_no_context_takeover: bool
    client_max_window_bits: int


# --- negotiation --------------------------------------------------------------------------

_Params = list[tuple[str, str | None]]

# RFC 7230 §3.2.6 token, quoted-string (qdtext / quoted-pair) and OWS.
_TOKEN = re.compile(r"[!#$%&'*+\-.^_`|~0-9A-Za-z]+")
_QUOTED = re.compile(r'"((?:[\t \x21\x23-\x5b\x5d-\x7e\x80-\xff]|\\[\t \x21-\x7e\x80-\xff])*)"')
_QUOTED_PAIR = re.compile(r"\\(.)")
_OWS = re.compile(r"[ \t]*")


def negotiate(offer_header_values: list[str], mode: Compression) -> Negotiated | None:
    """Accept the first acceptable permessage-deflate offer, or return None to decline.

    ``offer_header_values`` holds every Sec-WebSocket-Extensions value of the request.
    ``mode`` "shared" always answers server_no_context_takeover, so one compressor serves
    every connection; "dedicated" keeps the server's context unless the client asked not
    to. Both answer client_no_context_takeover, so no inflate window outlives a message.
    Offers with unknown, repeated or invalid parameters are skipped (RFC 7692 §5);
    a header that cannot be parsed raises :class:`ExtensionHeaderError`.
    """
    if mode == "off":
        return None
    if mode not in ("shared", "dedicated"):
        raise ValueError(f"unknown compression mode {mode!r}")
    offers = [offer for value in offer_header_values for offer in _parse_extensions(value)]
    for name, params in offers:
        if name.lower() == EXTENSION_NAME:
            accepted = _accept(params, shared=mode == "shared")
            if accepted is not None:
                return accepted
    return None


def _accept(params: _Params, *, shared: bool) -> Negotiated | None:
    """Answer one permessage-deflate offer (RFC 7692 §7.1), or None if it is unacceptable."""
    offered: dict[str, str | None] = {}
    for name, value in params:
        key = name.lower()
        if key not in _PARAMETERS or key in offered:
            return None
        offered[key] = value
    if any(offered.get(flag) is not None for flag in _FLAGS):
        return None
    server_bits = 15
    client_bits = 15
    if "server_max_window_bits" in offered:
        value = offered["server_max_window_bits"]
        if value not in _WINDOW_BITS or _WINDOW_BITS[value] < _MIN_SERVER_WINDOW_BITS:
            return None
        server_bits = _WINDOW_BITS[value]
    if offered.get("client_max_window_bits") is not None:
        value = offered["client_max_window_bits"]
        if value not in _WINDOW_BITS:
            return None
        # Omitted from the response, the offered value still bounds the client (§7.1.2.2).
        client_bits = _WINDOW_BITS[value]

    server_no_context_takeover = shared or "server_no_context_takeover" in offered
    parts = [EXTENSION_NAME]
    if server_no_context_takeover:
        parts.append("server_no_context_takeover")
    parts.append("client_no_context_takeover")
    if "server_max_window_bits" in offered:
        parts.append(f"server_max_window_bits={server_bits}")
    return Negotiated(
        response_header="; ".join(parts),
        server_no_context_takeover=server_no_context_takeover,
        server_max_window_bits=server_bits,
        client_no_context_takeover=True,
        client_max_window_bits=client_bits,
    )


def _parse_extensions(header: str) -> list[tuple[str, _Params]]:
    """Parse one Sec-WebSocket-Extensions value (RFC 6455 §9.1) into (name, params) pairs.

    Empty list elements are skipped (RFC 7230 §7); quoted values are unescaped and must
    then be tokens. Anything else that does not fit the grammar raises.
    """
    extensions: list[tuple[str, _Params]] = []
    end = len(header)
    pos = _skip_ows(header, 0)
    while pos < end:
        if header[pos] == ",":
            pos = _skip_ows(header, pos + 1)
            continue
        name, pos = _token(header, pos)
        params: _Params = []
        pos = _skip_ows(header, pos)
        while pos < end and header[pos] == ";":
            param, pos = _token(header, _skip_ows(header, pos + 1))
            pos = _skip_ows(header, pos)
            value: str | None = None
            if pos < end and header[pos] == "=":
                value, pos = _param_value(header, _skip_ows(header, pos + 1))
                pos = _skip_ows(header, pos)
            params.append((param, value))
        extensions.append((name, params))
        if pos < end:
            if header[pos] != ",":
                raise ExtensionHeaderError(f"unexpected {header[pos]!r} at {pos} in {header!r}")
            pos = _skip_ows(header, pos + 1)
    return extensions


def _skip_ows(header: str, pos: int) -> int:
    return _OWS.match(header, pos).end()  # type: ignore[union-attr]


def _token(header: str, pos: int) -> tuple[str, int]:
    match = _TOKEN.match(header, pos)
    if match is None:
        raise ExtensionHeaderError(f"expected a token at {pos} in {header!r}")
    return match.group(), match.end()


def _param_value(header: str, pos: int) -> tuple[str, int]:
    if not header.startswith('"', pos):
        return _token(header, pos)
    match = _QUOTED.match(header, pos)
    if match is None:
        raise ExtensionHeaderError(f"bad quoted string at {pos} in {header!r}")
    value = _QUOTED_PAIR.sub(r"\1", match.group(1))
    if _TOKEN.fullmatch(value) is None:  # RFC 6455 §9.1: unquoted, it must be a token
        raise ExtensionHeaderError(f"quoted value {value!r} is not a token in {header!r}")
    return value, match.end()


# --- outgoing -----------------------------------------------------------------------------


class SharedDeflater:
    """One compressor whose every output is decodable on its own (server_no_context_takeover).

    ``Z_FULL_FLUSH`` after each message resets the LZ77 history, so the bytes are valid for
    every connection that negotiated server_no_context_takeover with ``window_bits``.
    Measured: a full flush on one long-lived compressobj costs the same as a fresh
    compressobj for a 4 KiB page and up to 6x less for small events (a fresh 256 KiB
    allocation each time); ``compressobj.copy()`` of a pristine template was 10x slower.
    """

    __slots__ = ("_compressor", "window_bits")

    def __init__(self, window_bits: int = 15) -> None:
        if not _MIN_SERVER_WINDOW_BITS <= window_bits <= 15:
            raise ValueError(f"window_bits must be 9..15, got {window_bits}")
        self.window_bits = window_bits
        self._compressor = zlib.compressobj(
            COMPRESSION_LEVEL, zlib.DEFLATED, -window_bits, _SHARED_MEM_LEVEL
        )

    def compress(self, payload: bytes) -> bytes:
        """Return the RSV1 message payload for ``payload`` (RFC 7692 §7.2.1)."""
        compressor = self._compressor
        return (compressor.compress(payload) + compressor.flush(zlib.Z_FULL_FLUSH))[:-4]


@functools.lru_cache(maxsize=8)
def shared_deflater(window_bits: int = 15) -> SharedDeflater:
    """The process-wide :class:`SharedDeflater` for ``window_bits`` (one per distinct W)."""
    return SharedDeflater(window_bits)


class ContextDeflater:
    """A per-connection compressor that keeps its LZ77 history across messages.

    zlib's state (18 KiB) is allocated on the first message compressed, not at the handshake.
    """

    __slots__ = ("_compressor", "_window_bits")

    def __init__(self, window_bits: int = 15) -> None:
        if not _MIN_SERVER_WINDOW_BITS <= window_bits <= 15:
            raise ValueError(f"window_bits must be 9..15, got {window_bits}")
        self._window_bits = min(window_bits, _CONTEXT_WINDOW_BITS)
        self._compressor: Any = None

    def compress(self, payload: bytes) -> bytes:
        """Return the RSV1 message payload for ``payload``; decodable only in sequence."""
        compressor = self._compressor
        if compressor is None:
            compressor = self._compressor = zlib.compressobj(
                COMPRESSION_LEVEL, zlib.DEFLATED, -self._window_bits, _CONTEXT_MEM_LEVEL
            )
        return (compressor.compress(payload) + compressor.flush(zlib.Z_SYNC_FLUSH))[:-4]


# --- incoming -----------------------------------------------------------------------------


class Inflater:
    """Inflates whole incoming messages, refusing any that would exceed ``max_size`` bytes.

    Window size 15 accepts whatever client_max_window_bits the client compresses with.
    After an :class:`InflateError` the connection must be failed, not the Inflater reused.
    """

    __slots__ = ("_decompressor", "_limit", "context_takeover", "max_size")

    def __init__(self, max_size: int, *, context_takeover: bool) -> None:
        self.max_size = max_size
        self.context_takeover = context_takeover
        self._limit = max_size + 1
        self._decompressor = zlib.decompressobj(-15) if context_takeover else None

    def inflate(self, data: bytes) -> bytes:
        """Return the message compressed in ``data`` (the reassembled RSV1 payload).

        Raises :class:`MessageTooBig` having produced at most ``max_size + 1`` bytes, so a
        compression bomb costs nothing; :class:`InvalidCompressedData` on corrupt data.
        """
        # A fresh decompressobj per message measured faster than copying a pristine one.
        decompressor = self._decompressor or zlib.decompressobj(-15)
        try:
            message = decompressor.decompress(data + _TAIL, self._limit)
        except zlib.error as exc:
            raise InvalidCompressedData(f"invalid deflate data: {exc}") from None
        if len(message) > self.max_size:
            raise MessageTooBig(f"inflated message exceeds {self.max_size} bytes")
        if decompressor.eof:
            # The message ended with a BFINAL block (§7.2.3.3): only our tail may follow.
            if len(decompressor.unused_data) > len(_TAIL):
                raise InvalidCompressedData("data after the final deflate block")
            if self.context_takeover:
                # zlib cannot continue a finished stream; history before it is lost.
                self._decompressor = zlib.decompressobj(-15)
        return message
