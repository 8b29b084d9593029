"""The load tools stay usable: fanout end to end, and the C receiver against a scripted server."""

from __future__ import annotations

import asyncio
import base64
import hashlib
import random
import shutil
import subprocess
import sys
import zlib
from pathlib import Path

import orjson
import pytest

from loadtest import fanout, startup, wsraw
from loadtest import store as store_bench
from tests.support.frames import frame_bytes, split_frames
from tests.support.server import ROOT

needs_gcc = pytest.mark.skipif(
    shutil.which("gcc") is None, reason="gcc is missing: loadtest/fanrecv.c cannot be built"
)


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
def test_fanout_over_two_nodes_counts_every_delivery(tmp_path):
    """loadtest.cluster: two nodes on a real Redis and PostgreSQL, the members spread over
    them (a C receiver per node), every delivery counted, Redis' CPU reported."""
    out = tmp_path / "result.json"
    argv = [sys.executable, "-m", "loadtest.cluster", "--nodes", "2", "--", "--clients", "20"]
    argv += ["--publishers", "2", "--rate", "50", "--seconds", "1", "--warmup", "0.5"]
    argv += ["--sample", "4", "--receivers", "c", "--json", str(out)]
    done = subprocess.run(argv, cwd=ROOT, capture_output=True, text=True, timeout=120)
    assert done.returncode == 0, done.stderr[-2000:]
    (result,) = orjson.loads(out.read_bytes())["results"]
    assert result["nodes"] == 2 and result["errors"] == {} and result["receiver_closes"] == {}
    assert result["connections_per_node"] == [11, 11]  # 20 receivers and 2 publishers
    assert result["deliveries_per_s"] == pytest.approx(result["accepted_per_s"] * 20, rel=0.15)
    assert result["latency_samples"] == result["sample_expected"] > 0
    assert result["redis_cpu_pct"] is not None and result["server_cpu_pct"] > 0


@needs_gcc
def test_fanout_saturated_echo_gate_with_compression(tmp_path):
    """300 members: the server writes the room in several steps per round (fastchat.fanout.hub)."""
    args = ("--window", "8", "--compression", "--receivers", "c")
    result = run_fanout(tmp_path, *args, clients=300)
    assert result["gate"] == "echo" and result["compression"] is True
    assert result["errors"] == {} and result["accepted_per_s"] > 0
    assert result["receiver_closes"] == {}
    assert result["deliveries_per_s"] == pytest.approx(result["accepted_per_s"] * 300, rel=0.15)
    assert result["ack_latency_ms"]["p50"] > 0


@needs_gcc
def test_fanout_many_rooms_each_receiver_in_several_with_a_big_room(tmp_path):
    """8 rooms of 5 (each receiver in 2) plus one room of 10: one publisher per room, and
    every delivery the server counts reaches the receivers of the publisher's room."""
    args = ("--rate", "90", "--rooms", "8", "--rooms-per-client", "2", "--receivers", "c")
    result = run_fanout(tmp_path, *args, "--big-rooms", "1", "--big-room-size", "10")
    assert result["rooms"] == 9 and result["publishers"] == 9
    assert result["room_members"] == [5, 10]
    assert result["errors"] == {} and result["receiver_closes"] == {}
    assert 75 <= result["accepted_per_s"] <= 105
    expected = result["expected_deliveries_per_s"]
    assert expected == pytest.approx(result["accepted_per_s"] * (8 * 5 + 10) / 9, rel=0.15)
    assert result["deliveries_per_s"] == pytest.approx(expected, rel=0.15)
    assert result["latency_samples"] == result["sample_expected"] > 0


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
                writer.write(frame_bytes(0xC1, packed[:-4]))
            else:
                writer.write(frame_bytes(0x81, payload))
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


def scripted_stream() -> tuple[bytes, int, int]:
    """Data frames of every length encoding (some fragmented), with PINGs; counts both."""
    rnd = random.Random(3)
    parts, messages, pings = [], 0, 0
    for _ in range(3000):
        r = rnd.random()
        if r < 0.03:
            parts.append(frame_bytes(0x89, b"p" * rnd.randint(0, 125)))
            pings += 1
        elif r < 0.05:
            parts.append(frame_bytes(0x81, b"y" * rnd.randint(65536, 140_000)))
            messages += 1
        elif r < 0.07:
            parts += [
                frame_bytes(0x01, b"a" * 10),
                frame_bytes(0x89, b""),
                frame_bytes(0x80, b"b" * 300),
            ]
            messages += 1
            pings += 1
        else:
            parts.append(frame_bytes(rnd.choice((0x81, 0xC1)), b"\x81" * rnd.randint(0, 3000)))
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
            sent = split_frames(received)
            assert all(f.masked for f in sent)
            assert [f.opcode for f in sent] == [1, 1] + [0xA] * pings
            tokens.append(orjson.loads(sent[0].payload)["token"])
            assert orjson.loads(sent[1].payload) == {"type": "join_room", "roomId": "room-1"}
        assert sorted(tokens) == ["token-a", "token-a", "token-b"]  # -k 2: two per token
    finally:
        if proc.returncode is None:
            proc.kill()
            await proc.wait()
        server.close()


def test_startup_tool_times_real_starts_on_a_copy(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    template = store_bench._template(300, "random", 100, tmp_path / "cache")
    before = template.read_bytes()
    startup.main(["--db", str(template), "--dir", str(tmp_path), "--repeat", "2"])
    lines = capsys.readouterr().out.splitlines()
    assert [line.split(":")[0] for line in lines[-2:]] == ["start 1", "start 2"]
    assert all(line.endswith("(exit code 0)") for line in lines[-2:])
    assert template.read_bytes() == before  # the server ran on a copy
