"""The load generator's client (loadtest/wsraw.py) in-process: its frame walker however the
stream is cut into reads (Hypothesis), the switch from message to count mode, and the
marker counter the publishers scan with."""

from __future__ import annotations

import base64
import hashlib
import itertools

from hypothesis import given, settings
from hypothesis import strategies as st

from loadtest import wsraw
from tests.support.frames import frame_bytes
from tests.support.transports import CountingTransport


def feed(client: wsraw.RawClient, stream: bytes, cuts: list[int]) -> None:
    """Hand ``stream`` to ``client`` through the shared buffer, in reads of the given sizes."""
    pos, i = 0, 0
    while pos < len(stream):
        chunk = stream[pos : pos + cuts[i % len(cuts)]]
        i += 1
        wsraw._SHARED_BUFFER[: len(chunk)] = chunk
        client.buffer_updated(len(chunk))
        pos += len(chunk)


kinds = st.lists(
    st.one_of(
        st.tuples(st.just("ping"), st.integers(0, 125)),
        st.tuples(st.just("text"), st.integers(0, 3000)),
        st.tuples(st.just("big"), st.integers(65536, 70_000)),
        st.tuples(st.just("fragmented"), st.integers(0, 200)),
    ),
    min_size=1,
    max_size=60,
)
reads = st.lists(st.sampled_from([1, 2, 3, 5, 100, 1000, 70_000, 262_144]), min_size=1, max_size=8)


def build(items: list[tuple[str, int]]) -> tuple[bytes, list[bytes], int]:
    parts, messages, pings = [], [], 0
    for kind, size in items:
        if kind == "ping":
            parts.append(frame_bytes(0x89, b"p" * size))
            pings += 1
        elif kind == "fragmented":
            parts.append(frame_bytes(0x01, b"a" * size) + frame_bytes(0x80, b"b" * 5))
            messages.append(b"a" * size + b"b" * 5)
        else:
            payload = bytes([0x81]) * size if kind == "big" else b"m" * size
            parts.append(frame_bytes(0x81, payload))
            messages.append(payload)
    return b"".join(parts), messages, pings


@settings(max_examples=60, deadline=None)
@given(items=kinds, cuts=reads)
async def test_wsraw_count_mode_counts_every_frame_however_split(items, cuts):
    stream, messages, pings = build(items)
    client = wsraw.RawClient("h", 1, "/")
    client._handshake = None
    client.transport = CountingTransport()  # type: ignore[assignment]
    client.on_message = None
    seen = bytearray()  # on_data (a publisher's scan) sees every read, unparsed
    client.on_data = lambda buf, start, end: seen.extend(buf[start:end])
    feed(client, stream, cuts)
    assert client.frames == len(messages)
    assert bytes(seen) == stream
    assert client.transport.writes == pings  # type: ignore[union-attr]


@settings(max_examples=60, deadline=None)
@given(items=kinds, cuts=reads, data=st.data())
async def test_wsraw_message_mode_then_count_mode(items, cuts, data):
    stream, messages, _pings = build(items)
    switch = data.draw(st.integers(0, len(messages)))
    client = wsraw.RawClient("h", 1, "/")
    client.transport = CountingTransport()  # type: ignore[assignment]
    key = client._request.split(b"Sec-WebSocket-Key: ")[1].split(b"\r\n")[0]
    accept = base64.b64encode(hashlib.sha1(key + wsraw._GUID).digest())
    head = b"HTTP/1.1 101 Switching Protocols\r\nUpgrade: websocket\r\nSec-WebSocket-Accept: "
    got: list[bytes] = []

    def on_message(payload: bytes, _received_ns: int) -> None:
        got.append(payload)
        if len(got) >= switch:
            client.on_message = None

    client.on_message = on_message if switch else None
    feed(client, head + accept + b"\r\n\r\n" + stream, cuts)
    assert client.upgraded.done() and client.upgraded.exception() is None
    assert got == messages[:switch]
    assert client.frames == len(messages)


@settings(max_examples=100, deadline=None)
@given(
    parts=st.lists(st.sampled_from([b"<ab>", b"<a", b"b>", b"x", b"<<ab>>", b""]), max_size=40),
    cuts=st.lists(st.integers(0, 200), max_size=12),
)
def test_marker_counter_counts_markers_cut_by_reads(parts, cuts):
    stream = b"".join(parts)
    counter = wsraw.MarkerCounter(b"<ab>")
    buf = bytearray(b"junk" + stream + b"junk")  # chunks are windows of a larger buffer
    edges = sorted({0, len(stream), *(c for c in cuts if c <= len(stream))})
    for start, end in itertools.pairwise(edges):
        counter.feed(buf, 4 + start, 4 + end)
    assert counter.count == stream.count(b"<ab>")
