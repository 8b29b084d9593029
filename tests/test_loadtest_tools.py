"""The load tools stay usable: fanout end to end, the C receiver's frame walker, wsraw's walker."""

from __future__ import annotations

import asyncio
import base64
import hashlib
import itertools
import random
import shutil
import subprocess
import sys
import zlib
from pathlib import Path

import orjson
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from loadtest import fanout, wsraw

ROOT = Path(__file__).resolve().parent.parent
needs_gcc = pytest.mark.skipif(
    shutil.which("gcc") is None, reason="gcc is missing: loadtest/fanrecv.c cannot be built"
)


def frame(first_byte: int, payload: bytes) -> bytes:
    """An unmasked server frame with the shortest length encoding."""
    n = len(payload)
    if n < 126:
        head = bytes((first_byte, n))
    elif n < 65536:
        head = bytes((first_byte, 126)) + n.to_bytes(2, "big")
    else:
        head = bytes((first_byte, 127)) + n.to_bytes(8, "big")
    return head + payload


# --- fanout end to end ------------------------------------------------------------------------


def run_fanout(tmp_path: Path, *extra: str, clients: int = 20) -> dict:
    out = tmp_path / "result.json"
    argv = [sys.executable, "-m", "loadtest.fanout", "--spawn-server", "--clients", str(clients)]
    argv += ["--publishers", "2", "--seconds", "1", "--warmup", "0.5", "--sample", "4"]
    argv += ["--json", str(out), *extra]
    done = subprocess.run(argv, cwd=ROOT, capture_output=True, text=True, timeout=90)
    assert done.returncode == 0, done.stderr[-2000:]
    (result,) = orjson.loads(out.read_bytes())["results"]
    return result


@needs_gcc
def test_fanout_fixed_rate_with_the_c_receiver(tmp_path):
    result = run_fanout(tmp_path, "--rate", "50", "--receivers", "c")
    assert result["receivers"] == "c"
    assert result["errors"] == {} and result["receiver_closes"] == {}
    assert 40 <= result["accepted_per_s"] <= 60
    assert result["deliveries_per_s"] == pytest.approx(result["accepted_per_s"] * 20, rel=0.15)
    assert result["latency_samples"] == result["sample_expected"] > 0
    assert set(result["generator_cpu_pct"]) == {"python", "fanrecv"}


@needs_gcc
def test_fanout_saturated_echo_gate_with_compression(tmp_path):
    """300 members: the server writes the room in several steps per round (fastchat.hub)."""
    args = ("--window", "8", "--compression", "--receivers", "c")
    result = run_fanout(tmp_path, *args, clients=300)
    assert result["gate"] == "echo" and result["compression"] is True
    assert result["errors"] == {} and result["accepted_per_s"] > 0
    assert result["receiver_closes"] == {}
    assert result["deliveries_per_s"] == pytest.approx(result["accepted_per_s"] * 300, rel=0.15)
    assert result["ack_latency_ms"]["p50"] > 0


# --- fanrecv against a scripted server ----------------------------------------------------------


class ScriptedServer:
    """Accepts fanrecv's connections, answers the upgrade and the join, then plays ``stream``."""

    def __init__(self, stream: bytes, deflate: bool) -> None:
        self.stream = stream
        self.deflate = deflate
        self.received: list[bytearray] = []
        self.writers: list[asyncio.StreamWriter] = []
        self.finished: list[asyncio.Future[None]] = []

    async def handle(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        head = await reader.readuntil(b"\r\n\r\n")
        key = head.split(b"Sec-WebSocket-Key: ")[1].split(b"\r\n")[0]
        accept = base64.b64encode(hashlib.sha1(key + wsraw._GUID).digest())
        extension = b"Sec-WebSocket-Extensions: permessage-deflate\r\n" if self.deflate else b""
        writer.write(
            b"HTTP/1.1 101 Switching Protocols\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n"
            b"Sec-WebSocket-Accept: " + accept + b"\r\n" + extension + b"\r\n"
        )
        self.writers.append(writer)
        # Context takeover across messages: the join is found only if the window is kept.
        deflater = zlib.compressobj(6, zlib.DEFLATED, -15)
        for event in (
            {"type": "authenticated", "data": {"user": {"id": "u" * 300}}},
            {"type": "room_joined", "data": {"roomId": "r", "members": ["u" * 300] * 50}},
        ):
            payload = orjson.dumps(event)
            if self.deflate:
                packed = deflater.compress(payload) + deflater.flush(zlib.Z_SYNC_FLUSH)
                writer.write(frame(0xC1, packed[:-4]))
            else:
                writer.write(frame(0x81, payload))
        await writer.drain()
        received = bytearray()
        self.received.append(received)
        finished = asyncio.get_running_loop().create_future()
        self.finished.append(finished)
        while data := await reader.read(65536):
            received += data
        finished.set_result(None)

    async def play(self) -> None:
        """Write the stream to every connection in uneven pieces."""
        rnd = random.Random(7)
        pos = 0
        while pos < len(self.stream):
            size = rnd.choice((1, 3, 9, 700, 5000, 70_000, 300_000))
            for writer in self.writers:
                writer.write(self.stream[pos : pos + size])
            pos += size
            for writer in self.writers:
                await writer.drain()


def client_frames(data: bytes) -> list[tuple[int, bytes]]:
    """(opcode, unmasked payload) of each masked client frame in ``data``."""
    frames, pos = [], 0
    while pos < len(data):
        opcode, n = data[pos] & 0x0F, data[pos + 1] & 0x7F
        pos += 2
        if n >= 126:
            size = 2 if n == 126 else 8
            n, pos = int.from_bytes(data[pos : pos + size], "big"), pos + size
        key, pos = data[pos : pos + 4], pos + 4
        frames.append((opcode, bytes(b ^ key[i % 4] for i, b in enumerate(data[pos : pos + n]))))
        pos += n
    return frames


def scripted_stream() -> tuple[bytes, int, int]:
    """Data frames of every length encoding (some fragmented), with PINGs; counts both."""
    rnd = random.Random(3)
    parts, messages, pings = [], 0, 0
    for _ in range(3000):
        r = rnd.random()
        if r < 0.03:
            parts.append(frame(0x89, b"p" * rnd.randint(0, 125)))
            pings += 1
        elif r < 0.05:
            parts.append(frame(0x81, b"y" * rnd.randint(65536, 140_000)))
            messages += 1
        elif r < 0.07:
            parts.append(frame(0x01, b"a" * 10) + frame(0x89, b"") + frame(0x80, b"b" * 300))
            messages += 1
            pings += 1
        else:
            parts.append(frame(rnd.choice((0x81, 0xC1)), b"\x81" * rnd.randint(0, 3000)))
            messages += 1
    return b"".join(parts), messages, pings


@needs_gcc
@pytest.mark.parametrize("deflate", [False, True], ids=["plain", "deflate"])
async def test_fanrecv_counts_split_frames_and_answers_pings(deflate):
    stream, messages, pings = scripted_stream()
    scripted = ScriptedServer(stream, deflate)
    server = await asyncio.start_server(scripted.handle, "127.0.0.1", 0)
    port = server.sockets[0].getsockname()[1]
    binary = fanout.build_fanrecv()
    assert binary is not None
    argv = [str(binary), "-k", "2", *(["-z"] if deflate else [])]
    argv += ["127.0.0.1", str(port), "/ws", "room-1", "3"]
    proc = await asyncio.create_subprocess_exec(
        *argv, stdin=asyncio.subprocess.PIPE, stdout=asyncio.subprocess.PIPE
    )
    assert proc.stdin is not None and proc.stdout is not None
    try:
        proc.stdin.write(b"token-a\ntoken-b\n")
        assert await asyncio.wait_for(proc.stdout.readline(), 10) == b"ready\n"
        await scripted.play()
        expected = 2 * 3 + 3 * messages  # authenticated + room_joined, then the stream

        async def caught_up() -> dict:
            while True:
                proc.stdin.write(b"tick\n")
                state = orjson.loads(await proc.stdout.readline())
                if state["frames"] >= expected:
                    return state

        state = await asyncio.wait_for(caught_up(), 20)
        assert (state["frames"], state["closed"], state["joined"]) == (expected, 0, 3)
        assert state["bytes"] > 3 * len(stream)
        proc.stdin.write(b"quit\n")
        assert await asyncio.wait_for(proc.wait(), 10) == 0
        await asyncio.wait_for(asyncio.gather(*scripted.finished), 10)  # all it sent is read
        tokens = []
        for received in scripted.received:
            sent = client_frames(bytes(received))
            assert [op for op, _ in sent] == [1, 1] + [0xA] * pings
            tokens.append(orjson.loads(sent[0][1])["token"])
            assert orjson.loads(sent[1][1]) == {"type": "join_room", "roomId": "room-1"}
        assert sorted(tokens) == ["token-a", "token-a", "token-b"]  # -k 2: two per token
    finally:
        if proc.returncode is None:
            proc.kill()
            await proc.wait()
        server.close()


# --- wsraw's frame walker (hypothesis) -----------------------------------------------------


class FakeTransport:
    def __init__(self) -> None:
        self.written: list[bytes] = []

    def write(self, data: bytes) -> None:
        self.written.append(data)

    def is_closing(self) -> bool:
        return False

    def close(self) -> None:
        pass


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
            parts.append(frame(0x89, b"p" * size))
            pings += 1
        elif kind == "fragmented":
            parts.append(frame(0x01, b"a" * size) + frame(0x80, b"b" * 5))
            messages.append(b"a" * size + b"b" * 5)
        else:
            payload = bytes([0x81]) * size if kind == "big" else b"m" * size
            parts.append(frame(0x81, payload))
            messages.append(payload)
    return b"".join(parts), messages, pings


@settings(max_examples=60, deadline=None)
@given(items=kinds, cuts=reads)
async def test_wsraw_count_mode_counts_every_frame_however_split(items, cuts):
    stream, messages, pings = build(items)
    client = wsraw.RawClient("h", 1, "/")
    client._handshake = None
    client.transport = FakeTransport()  # type: ignore[assignment]
    client.on_message = None
    seen = bytearray()  # on_data (a publisher's scan) sees every read, unparsed
    client.on_data = lambda buf, start, end: seen.extend(buf[start:end])
    feed(client, stream, cuts)
    assert client.frames == len(messages)
    assert bytes(seen) == stream
    assert len(client.transport.written) == pings  # type: ignore[union-attr]


@settings(max_examples=60, deadline=None)
@given(items=kinds, cuts=reads, data=st.data())
async def test_wsraw_message_mode_then_count_mode(items, cuts, data):
    stream, messages, _pings = build(items)
    switch = data.draw(st.integers(0, len(messages)))
    client = wsraw.RawClient("h", 1, "/")
    client.transport = FakeTransport()  # type: ignore[assignment]
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
