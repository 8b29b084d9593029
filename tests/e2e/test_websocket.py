"""The WebSocket transport and the fan-out engine end to end, over real sockets.

Clients: picows (tests/support/client.py), the ``websockets`` library for interop, and raw
sockets (tests/support/rawws.py) wherever the test needs the exact bytes, hand-made frames,
or a peer that stops reading or never answers pings.
"""

from __future__ import annotations

import asyncio
import random
import re
import string
import zlib
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import orjson
import pytest
from picows import WSMsgType
from websockets.extensions.permessage_deflate import ClientPerMessageDeflateFactory

from tests.support.accounts import register
from tests.support.client import ChatClient, joined
from tests.support.frames import (
    OP_CLOSE,
    OP_CONTINUATION,
    OP_PING,
    OP_PONG,
    OP_TEXT,
    TAIL,
    client_frame,
    compress_message,
)
from tests.support.interop import library_expect, library_member, varied_text
from tests.support.rawws import RawWS
from tests.support.server import ServerProcess

pytestmark = pytest.mark.sqlite_only  # transport: the storage backend plays no part

DEFLATE = ("Sec-WebSocket-Extensions", "permessage-deflate")
MAX_MESSAGE = 4096
MAX_FRAGMENTS = 4
THRESHOLD = 1024  # a short new_message event (~350 bytes) stays below it
GOOD_ORIGIN = "http://good.example"


@pytest.fixture(scope="module")
def edge_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[ServerProcess]:
    """One server for the connection-level checks: small message limits, one allowed origin."""
    directory: Path = tmp_path_factory.mktemp("ws-edge")
    server = ServerProcess.configured(
        directory,
        websocket={
            "max_message_bytes": MAX_MESSAGE,
            "max_fragments": MAX_FRAGMENTS,
            "compression_threshold": THRESHOLD,
        },
        server={"allowed_origins": [GOOD_ORIGIN]},
        limits={"auth_per_minute": 1000},
    ).start()
    yield server
    server.kill()


# --- helpers ----------------------------------------------------------------------------------


def metric(server: ServerProcess, name: str) -> float:
    """One fastchat counter or gauge from /metrics."""
    text = httpx.get(server.base_url + "/metrics").text
    match = re.search(rf"^fastchat_{name}(?:_total)?(?:\{{[^}}]*\}})? (\S+)$", text, re.M)
    assert match is not None, f"fastchat_{name} missing from /metrics"
    return float(match.group(1))


def proc_status_kib(server: ServerProcess, field: str) -> int:
    """VmRSS / VmHWM of the server process, in KiB."""
    assert server.process is not None
    status = Path(f"/proc/{server.process.pid}/status").read_text()
    match = re.search(rf"^{field}:\s+(\d+) kB$", status, re.M)
    assert match is not None
    return int(match.group(1))


def assert_healthy(server: ServerProcess) -> None:
    assert server.process is not None and server.process.poll() is None
    assert httpx.get(server.base_url + "/healthz").status_code == 200
    assert httpx.get(server.base_url + "/metrics").status_code == 200
    assert not any("Traceback" in line for line in server.log), "\n".join(server.log)


async def raw_member(
    server: ServerProcess,
    token: str,
    room: str = "general",
    headers: tuple[tuple[str, str], ...] = (),
    rcvbuf: int | None = None,
) -> RawWS:
    """A raw-socket client that is authenticated and in ``room``."""
    client = await RawWS.open(server.host, server.port, headers=headers, rcvbuf=rcvbuf)
    assert client.status == 101
    await client.expect("connection_established")
    await client.send_json(type="authenticate", token=token)
    await client.expect("authenticated")
    await client.send_json(type="join_room", roomId=room)
    await client.expect("room_joined", roomId=room)
    return client


def inflate_strict(payload: bytes, window_bits: int) -> bytes:
    """Inflate one RSV1 message with a ``window_bits`` window, failing on farther references.

    zlib only notices a distance beyond the window when the output so far is not in the
    caller's buffer, hence the small output steps.
    """
    decompressor = zlib.decompressobj(-window_bits)
    out = decompressor.decompress(payload + TAIL, 64)
    while decompressor.unconsumed_tail:
        out += decompressor.decompress(decompressor.unconsumed_tail, 64)
    return out


# --- 1. encode once, the same bytes for everyone --------------------------------------------


async def test_a_broadcast_is_the_same_frame_bytes_for_every_member(edge_server):
    server = edge_server
    accounts = [register(server.base_url) for _ in range(4)]
    plain = [await raw_member(server, accounts[i % 4]["token"]) for i in range(12)]
    deflating = [
        await raw_member(server, accounts[i % 4]["token"], headers=(DEFLATE,)) for i in range(8)
    ]
    assert all("permessage-deflate" in (c.extensions or "") for c in deflating)
    small = "short hello"
    large = varied_text(1500, seed=1)
    await plain[0].send_json(type="send_message", roomId="general", content=small)
    await plain[0].send_json(type="send_message", roomId="general", content=large)

    async def both(client: RawWS) -> list[tuple[bytes, bool, dict[str, Any]]]:
        got = []
        for content in (small, large):
            frame, data = await client.expect("new_message")
            assert data["message"]["content"] == content
            got.append((frame.raw, frame.rsv1, data))
        return got

    received = await asyncio.gather(*(both(c) for c in plain + deflating))
    for index in (0, 1):
        plain_frames = {got[index][0] for got in received[: len(plain)]}
        deflate_frames = {got[index][0] for got in received[len(plain) :]}
        assert len(plain_frames) == 1, "plain members got different bytes"
        assert len(deflate_frames) == 1, "deflate members got different bytes"
        assert len({orjson.dumps(got[index][2]) for got in received}) == 1
    # Below the threshold everyone gets the very same uncompressed frame.
    assert received[0][0][0] == received[-1][0][0] and not received[-1][0][1]
    # Above it, deflating members share one compressed frame, smaller than the plain one.
    assert received[-1][1][1] and not received[0][1][1]
    assert len(received[-1][1][0]) < len(received[0][1][0]) / 2
    for client in plain + deflating:
        client.close()


# --- 2. permessage-deflate interop with the websockets library ------------------------------


async def test_websockets_library_deflate_shared_mode_and_a_mixed_room(edge_server):
    server = edge_server
    ws = await library_member(
        server, register(server.base_url)["token"], compression="deflate", max_size=2**20
    )
    extensions = ws.response.headers["Sec-WebSocket-Extensions"]
    assert "permessage-deflate" in extensions
    assert "server_no_context_takeover" in extensions
    assert ws.protocol.extensions, "the library did not accept our answer"
    picows_client, _ = await joined(server.ws_url, server.base_url)
    compressed_before = metric(server, "compressed_frames")

    large = varied_text(1800, seed=2)
    await ws.send(
        orjson.dumps(
            {"type": "send_message", "roomId": "general", "content": large, "clientId": "big"}
        ).decode()
    )
    by_library = (await library_expect(ws, "new_message"))["message"]
    by_picows = (await picows_client.expect("new_message"))["message"]
    assert by_library == by_picows and by_library["content"] == large
    await library_expect(ws, "message_ack", clientId="big")

    picows_client.send(type="send_message", roomId="general", content="small one")
    by_library = (await library_expect(ws, "new_message"))["message"]
    assert by_library == (await picows_client.expect("new_message"))["message"]
    assert by_library["content"] == "small one"

    await ws.send(orjson.dumps({"type": "get_room_history", "roomId": "general"}).decode())
    history = await library_expect(ws, "room_history")
    assert [m["content"] for m in history["messages"]][-2:] == [large, "small one"]
    assert metric(server, "compressed_frames") > compressed_before
    await ws.close()
    await picows_client.close()


async def test_websockets_library_dedicated_and_off_modes(make_server):
    dedicated = make_server(websocket={"compression": "dedicated"})
    ws = await library_member(dedicated, register(dedicated.base_url)["token"])
    extensions = ws.response.headers["Sec-WebSocket-Extensions"]
    assert "permessage-deflate" in extensions
    assert "server_no_context_takeover" not in extensions
    plain, _ = await joined(dedicated.ws_url, dedicated.base_url)
    compressed_before = metric(dedicated, "compressed_frames")
    # Similar messages in a row: with context takeover each refers back to the previous.
    contents = [varied_text(1200, seed=3) + f" #{n}" for n in range(4)] + ["tiny"]
    for content in contents:
        plain.send(type="send_message", roomId="general", content=content)
    for content in contents:
        message = (await library_expect(ws, "new_message"))["message"]
        assert message == (await plain.expect("new_message"))["message"]
        assert message["content"] == content
    # At least the four long broadcasts, each compressed for this member alone.
    compressed = metric(dedicated, "compressed_frames")
    assert compressed >= compressed_before + 4
    await ws.send(orjson.dumps({"type": "get_room_history", "roomId": "general"}).decode())
    await library_expect(ws, "room_history")  # a reply of its own, compressed on its own
    assert metric(dedicated, "compressed_frames") > compressed
    await ws.close()
    await plain.close()

    off = make_server(websocket={"compression": "off"})
    ws = await library_member(off, register(off.base_url)["token"], compression="deflate")
    assert "Sec-WebSocket-Extensions" not in ws.response.headers
    assert not ws.protocol.extensions
    large = varied_text(1000, seed=4)
    await ws.send(
        orjson.dumps({"type": "send_message", "roomId": "general", "content": large}).decode()
    )
    assert (await library_expect(ws, "new_message"))["message"]["content"] == large
    await ws.close()


async def test_server_max_window_bits_10_is_honoured(edge_server):
    server = edge_server
    token = register(server.base_url)["token"]
    factory = ClientPerMessageDeflateFactory(server_max_window_bits=10)
    ws = await library_member(server, token, compression=None, extensions=[factory])
    assert "server_max_window_bits=10" in ws.response.headers["Sec-WebSocket-Extensions"]
    offer = "permessage-deflate; server_max_window_bits=10; client_max_window_bits"
    raw = await raw_member(server, token, headers=(("Sec-WebSocket-Extensions", offer),))
    assert raw.extensions is not None and "server_max_window_bits=10" in raw.extensions
    # Repeats 1100 characters back: a 15-bit window would reference past 1024 bytes.
    rng = random.Random(5)
    block = "".join(rng.choices(string.ascii_letters, k=1100))
    content = block + block[:850]
    await ws.send(
        orjson.dumps({"type": "send_message", "roomId": "general", "content": content}).decode()
    )
    assert (await library_expect(ws, "new_message"))["message"]["content"] == content
    while True:
        frame = await raw.recv_frame()
        if frame.opcode != OP_TEXT:
            continue
        # A reference farther back than 1024 bytes would raise here.
        payload = inflate_strict(frame.payload, 10) if frame.rsv1 else frame.payload
        message = orjson.loads(payload)
        if message["type"] == "new_message":
            break
    assert frame.rsv1
    assert message["data"]["message"]["content"] == content
    await ws.close()
    raw.close()


# --- 3. compression bomb ----------------------------------------------------------------------


async def test_compression_bomb_is_closed_with_1009_cheaply(make_server):
    server = make_server()  # the default 64 KiB limit: the bomb fits in one frame
    bystander, _ = await joined(server.ws_url, server.base_url)
    bomb = compress_message(b"0" * (10 * 1024 * 1024))
    assert len(bomb) < 64 * 1024
    attacker = await RawWS.open(server.host, server.port, headers=(DEFLATE,))
    assert attacker.status == 101 and "permessage-deflate" in (attacker.extensions or "")
    await attacker.expect("connection_established")
    peak_before = proc_status_kib(server, "VmHWM")
    await attacker.send_frame(OP_TEXT, bomb, rsv1=True)
    assert await attacker.closed() == 1009
    # Inflation stopped at the limit: the 10 MB never existed in the server.
    assert proc_status_kib(server, "VmHWM") - peak_before < 4 * 1024
    bystander.send(type="send_message", roomId="general", content="still serving")
    assert (await bystander.expect("new_message"))["message"]["content"] == "still serving"
    assert_healthy(server)
    await bystander.close()


# --- 4. frames the server must refuse, and fragments it must put together -------------------

_T, _C, _B = WSMsgType.TEXT, WSMsgType.CONTINUATION, WSMsgType.BINARY
_BIG_PART = b"x" * (MAX_MESSAGE // 2 + 1)

REFUSED: dict[str, tuple[bool, list[tuple[bytes, WSMsgType, dict[str, bool]]], int]] = {
    # name: (negotiate deflate, frames as (payload, type, send kwargs), close code)
    "oversized frame": (False, [(b"x" * (MAX_MESSAGE + 1), _T, {})], 1009),
    "fragments add up too big": (
        False,
        [(_BIG_PART, _T, {"fin": False}), (_BIG_PART, _C, {"fin": False})],
        1009,
    ),
    "too many fragments": (
        False,
        [(b"{", _T, {"fin": False})] + [(b" ", _C, {"fin": False})] * MAX_FRAGMENTS,
        1009,
    ),
    "continuation without a start": (False, [(b"{}", _C, {})], 1002),
    "new message inside a fragmented one": (
        False,
        [(b"{", _T, {"fin": False}), (b"{}", _T, {})],
        1002,
    ),
    "binary frame": (False, [(b"\x00\x01", _B, {})], 1003),
    "invalid UTF-8": (False, [(b'{"type": "\xff\xfe"}', _T, {})], 1007),
    "invalid UTF-8 across fragments": (
        False,
        [(b'{"type": "\xc3', _T, {"fin": False}), (b'("}', _C, {})],
        1007,
    ),
    "RSV1 without deflate": (False, [(b"{}", _T, {"rsv1": True})], 1002),
    "RSV1 without deflate, fragmented": (
        False,
        [(b"{", _T, {"fin": False, "rsv1": True}), (b"}", _C, {})],
        1002,
    ),
    "RSV1 on a continuation": (
        True,
        [(b"{", _T, {"fin": False}), (b"}", _C, {"rsv1": True})],
        1002,
    ),
    "corrupt deflate data": (True, [(b"\xff\xff\xff\xff", _T, {"rsv1": True})], 1002),
}


@pytest.mark.parametrize("case", list(REFUSED))
async def test_bad_frames_close_the_connection_with_the_right_code(edge_server, case):
    deflate, frames, code = REFUSED[case]
    headers = dict([DEFLATE]) if deflate else None
    client = await ChatClient.connect(edge_server.ws_url, extra_headers=headers)
    for payload, msg_type, kwargs in frames:
        client.send_raw(payload, msg_type, **kwargs)
    assert await client.closed() == code
    assert edge_server.process is not None and edge_server.process.poll() is None


@pytest.mark.parametrize(
    ("deflate", "frame"),
    [
        pytest.param(False, client_frame(OP_TEXT, b"{}", rsv2=True), id="RSV2 on text"),
        pytest.param(False, client_frame(OP_TEXT, b"{}", rsv3=True), id="RSV3 on text"),
        pytest.param(False, client_frame(OP_PING, b"p", rsv1=True), id="RSV1 on ping"),
        pytest.param(True, client_frame(OP_PING, b"p", rsv1=True), id="RSV1 on ping, deflate"),
    ],
)
async def test_undefined_reserved_bits_fail_the_connection(edge_server, deflate, frame):
    client = await RawWS.open(
        edge_server.host, edge_server.port, headers=(DEFLATE,) if deflate else ()
    )
    await client.expect("connection_established")
    await client.send_bytes(frame)
    await client.send_json(type="ping")  # answered (auth_required) only if the bad frame passed
    first = await client.recv_frame()
    client.close()
    assert first.close_code == 1002, f"the server went on and sent {first}"


# RFC 6455 section 7.4.2: codes no endpoint may send (0-999 unused, 1004-1006 and 1015
# reserved, 1016-2999 unassigned, 5000 and up outside the range).
@pytest.mark.parametrize("code", [0, 999, 1004, 1005, 1006, 1015, 1016, 2999, 5000, 65535])
async def test_an_invalid_close_code_fails_the_connection_with_1002(edge_server, code):
    client = await RawWS.open(edge_server.host, edge_server.port)
    await client.expect("connection_established")
    await client.send_frame(OP_CLOSE, code.to_bytes(2, "big") + b"bye")
    assert await client.closed() == 1002


@pytest.mark.parametrize(
    ("payload", "echoed"),
    [
        pytest.param(b"", 1000, id="no code"),
        pytest.param(b"\x03\xe8", 1000, id="1000"),
        pytest.param(b"\x03\xe9going", 1001, id="1001 with a reason"),
        pytest.param(b"\x0b\xb8", 3000, id="3000"),
        pytest.param(b"\x13\x87", 4999, id="4999"),
    ],
)
async def test_a_valid_close_frame_is_echoed(edge_server, payload, echoed):
    client = await RawWS.open(edge_server.host, edge_server.port)
    await client.expect("connection_established")
    await client.send_frame(OP_CLOSE, payload)
    assert await client.closed() == echoed


async def test_nothing_is_sent_after_the_close_a_malformed_frame_causes(edge_server):
    client = await RawWS.open(edge_server.host, edge_server.port)
    await client.expect("connection_established")
    # In one write: a request the server answers (auth_required), then a reserved opcode.
    # picows parses both before it delivers the first, and has sent its 1002 by then.
    await client.send_bytes(client_frame(OP_TEXT, b'{"type": "ping"}') + client_frame(0x3, b""))
    frames = []
    with pytest.raises((EOFError, ConnectionResetError)):
        while True:
            frames.append(await client.recv_frame())
    assert [frame.close_code for frame in frames] == [1002], f"sent after its close: {frames}"


async def test_peer_protocol_errors_are_logged_as_one_rate_limited_warning(make_server):
    server = make_server()
    for _ in range(10):
        client = await RawWS.open(server.host, server.port)
        await client.expect("connection_established")
        await client.send_bytes(client_frame(0x3, b""))  # a reserved opcode: picows refuses it
        assert await client.closed() == 1002
    assert server.stop() == 0  # every line the server wrote is read once it has exited
    reports = [line for line in server.log if "WS parser error" in line]
    assert len(reports) == 1, reports
    assert " WARNING " in reports[0]


async def test_fragmented_messages_are_reassembled(edge_server):
    server = edge_server
    client, _ = await joined(server.ws_url, server.base_url)
    payload = orjson.dumps({"type": "send_message", "roomId": "general", "content": "héllo"})
    cut = payload.index("é".encode()) + 1  # split inside the two-byte character
    client.send_raw(payload[:5], _T, fin=False)
    client.send_raw(payload[5:cut], _C, fin=False)
    client.send_raw(payload[cut:], _C)
    assert (await client.expect("new_message"))["message"]["content"] == "héllo"

    # Compressed and fragmented, with a ping between the fragments (RFC 6455 section 5.4).
    raw = await raw_member(server, register(server.base_url)["token"], headers=(DEFLATE,))
    content = varied_text(MAX_FRAGMENTS * 300, seed=6)
    body = compress_message(
        orjson.dumps({"type": "send_message", "roomId": "general", "content": content})
    )
    step = len(body) // MAX_FRAGMENTS + 1
    parts = [body[i : i + step] for i in range(0, len(body), step)]
    assert len(parts) == MAX_FRAGMENTS
    await raw.send_frame(OP_TEXT, parts[0], fin=False, rsv1=True)
    await raw.send_frame(OP_PING, b"mid")
    for index, part in enumerate(parts[1:], 2):
        await raw.send_frame(OP_CONTINUATION, part, fin=index == len(parts))
    pong = await raw.recv_frame()
    while pong.opcode != OP_PONG:
        pong = await raw.recv_frame()
    assert pong.payload == b"mid"
    _, data = await raw.expect("new_message")
    assert data["message"]["content"] == content
    assert (await client.expect("new_message"))["message"]["content"] == content
    raw.close()
    await client.close()


# --- 5. deflate offers: declined when unacceptable, 400 only when unparseable ---------------

DECLINED = [
    "permessage-deflate; server_max_window_bits=8",
    "permessage-deflate; server_max_window_bits=16",
    "permessage-deflate; server_max_window_bits",
    "permessage-deflate; client_max_window_bits=7",
    "permessage-deflate; foo=1",
    "permessage-deflate; client_no_context_takeover; client_no_context_takeover",
    "permessage-deflate; server_max_window_bits=10; server_max_window_bits=10",
    "permessage-deflate; server_no_context_takeover=1",
    "x-webkit-deflate-frame",
    "",
]
UNPARSEABLE = [
    "permessage-deflate; =1",
    "permessage-deflate;; x",
    "permessage-deflate; a=b c",
    'permessage-deflate; client_max_window_bits="1 0"',
    "permessage-deflate @",
    "(╯°□°)╯",
]


@pytest.mark.parametrize("offer", DECLINED)
async def test_unacceptable_offers_are_declined_not_refused(edge_server, offer):
    client = await RawWS.open(
        edge_server.host, edge_server.port, headers=(("Sec-WebSocket-Extensions", offer),)
    )
    assert client.status == 101
    assert client.extensions is None
    _, hello = await client.next_event()
    assert hello["type"] == "connection_established"
    client.close()


async def test_first_acceptable_offer_wins_across_header_lines(edge_server):
    client = await RawWS.open(
        edge_server.host,
        edge_server.port,
        headers=(
            ("Sec-WebSocket-Extensions", "permessage-deflate; foo=1"),
            ("Sec-WebSocket-Extensions", "permessage-deflate; server_max_window_bits=12"),
        ),
    )
    assert client.status == 101
    assert client.extensions is not None and "server_max_window_bits=12" in client.extensions
    client.close()


@pytest.mark.parametrize("offer", UNPARSEABLE)
async def test_unparseable_offer_is_400(edge_server, offer):
    client = await RawWS.open(
        edge_server.host, edge_server.port, headers=(("Sec-WebSocket-Extensions", offer),)
    )
    assert client.status == 400
    client.close()
    assert_healthy(edge_server)


# --- 6 and 7. backpressure: slow consumers are cut off, brief pauses are drained ------------
# The kernel's send buffer towards a peer that does not read autotunes up to tcp_wmem's
# maximum (4 MB here) before the transport pauses, so floods run until the server reports
# a pause (or a slow-consumer close) rather than for a fixed, machine-dependent size.

FLOOD_LIMITS = {"messages_per_second": 100_000.0, "burst": 100_000, "auth_per_minute": 1000}
FLOOD_CHECK = 500  # messages between two looks at /metrics
FLOOD_MAX = 16_000  # ~30 MB of frames: far beyond any socket buffer


class Flood:
    """One member sends 1.9 KB messages; another, reading promptly, records every seq.

    Sending in small batches, each awaited by the watcher, keeps the server's transient
    buffers (and so its RSS high-water mark) small: 500 at a time doubled the RSS growth.
    """

    def __init__(self, sender: ChatClient, watcher: ChatClient, seed: int, batch: int = 100):
        self.sender = sender
        self.watcher = watcher
        self.content = varied_text(1800, seed)
        self.batch = batch
        self.seqs: list[int] = []

    async def send(self, count: int) -> None:
        """Send ``count`` messages, returning once the watcher has all of them."""
        for start in range(0, count, self.batch):
            target = len(self.seqs) + min(self.batch, count - start)
            for n in range(start, min(start + self.batch, count)):
                self.sender.send(
                    type="send_message", roomId="general", content=f"{n} {self.content}"
                )
            while len(self.seqs) < target:
                self.seqs.append((await self.watcher.expect("new_message"))["message"]["seq"])

    async def until(self, server: ServerProcess, counter: str, above: float) -> None:
        """Send until the server's ``counter`` exceeds ``above``."""
        while metric(server, counter) <= above:
            assert len(self.seqs) < FLOOD_MAX, f"{counter} never moved"
            await self.send(FLOOD_CHECK)

    def assert_complete(self) -> None:
        assert self.seqs == list(range(self.seqs[0], self.seqs[0] + len(self.seqs)))


async def opcodes_until_closed(ws: RawWS, timeout: float) -> tuple[list[int], float]:
    """Read frames until the server closes the socket: their opcodes, and how long it took.

    Each read may wait ``timeout``: a server that never closes fails the test there.
    """
    loop = asyncio.get_running_loop()
    started = loop.time()
    opcodes = []
    with pytest.raises((EOFError, ConnectionResetError)):
        while True:
            opcodes.append((await ws.recv_frame(timeout=timeout)).opcode)
    return opcodes, loop.time() - started


async def test_slow_consumer_is_closed_and_others_get_everything(make_server):
    server = make_server(
        websocket={"max_backpressure_bytes": 256 * 1024, "backpressure_soft_bytes": 32 * 1024},
        limits=FLOOD_LIMITS,
    )
    sender, _ = await joined(server.ws_url, server.base_url)
    watcher, _ = await joined(server.ws_url, server.base_url)
    flood = Flood(sender, watcher, seed=7)
    await flood.send(FLOOD_CHECK)  # warm up the server's caches before measuring memory
    slow = await raw_member(server, register(server.base_url)["token"], rcvbuf=4096)
    rss_before = proc_status_kib(server, "VmRSS")

    await flood.until(server, "slow_consumer_closes", 0)
    closed_after = len(flood.seqs)
    # Had it been kept, the slow consumer would now hold ~6 MB beyond the kernel buffer.
    await flood.send(3000)
    flood.assert_complete()
    assert proc_status_kib(server, "VmRSS") - rss_before < 6 * 1024

    opcodes, seconds = await opcodes_until_closed(slow, timeout=5)
    assert seconds < 5
    assert opcodes.count(OP_TEXT) < closed_after
    slow.close()
    assert_healthy(server)
    await sender.close()
    await watcher.close()


async def test_a_paused_reader_gets_every_message_in_order_when_it_resumes(make_server):
    server = make_server(
        websocket={
            "max_backpressure_bytes": 64 * 1024 * 1024,
            "backpressure_soft_bytes": 16 * 1024,
        },
        limits=FLOOD_LIMITS,
    )
    paused = await raw_member(server, register(server.base_url)["token"], rcvbuf=4096)
    sender, _ = await joined(server.ws_url, server.base_url)
    watcher, _ = await joined(server.ws_url, server.base_url)
    flood = Flood(sender, watcher, seed=8, batch=FLOOD_CHECK)
    await flood.until(server, "write_pauses", metric(server, "write_pauses"))
    await flood.send(FLOOD_CHECK)  # and more while it is held back
    flood.assert_complete()

    received = []
    while len(received) < len(flood.seqs):
        _, data = await paused.expect("new_message")
        received.append(data["message"]["seq"])
    assert received == flood.seqs
    await paused.send_json(type="ping")
    await paused.expect("pong")
    assert metric(server, "slow_consumer_closes") == 0
    paused.close()
    await sender.close()
    await watcher.close()


# --- 8. ping timeout --------------------------------------------------------------------------


async def test_silent_peer_is_closed_after_the_ping_timeout(make_server):
    server = make_server(websocket={"ping_interval_seconds": 0.5, "ping_timeout_seconds": 0.5})
    responsive = await ChatClient.connect(server.ws_url, register(server.base_url)["token"])
    silent = await RawWS.open(server.host, server.port)
    assert silent.status == 101
    opcodes, seconds = await opcodes_until_closed(silent, timeout=3)
    assert OP_PING in opcodes
    assert seconds < 3.0  # 0.5 s idle + 0.5 s unanswered, with room for load
    silent.close()
    # picows answers the same pings: over the same time it stayed connected.
    assert not responsive.transport.is_disconnected
    responsive.send(type="ping")
    await responsive.expect("pong")
    await responsive.close()


# --- 9. upgrade paths and origins --------------------------------------------------------------


@pytest.mark.parametrize(("path", "status"), [("/", 101), ("/ws", 101), ("/chat", 404)])
async def test_upgrade_paths(edge_server, path, status):
    client = await RawWS.open(edge_server.host, edge_server.port, path=path)
    assert client.status == status
    client.close()


@pytest.mark.parametrize(
    ("origin", "status"),
    [
        (None, 101),
        ("same", 101),
        (GOOD_ORIGIN, 101),
        ("http://evil.example", 403),
        ("http://good.example.evil.example", 403),
    ],
)
async def test_upgrade_origins(edge_server, origin, status):
    if origin == "same":
        origin = edge_server.base_url
    headers = (("Origin", origin),) if origin else ()
    client = await RawWS.open(edge_server.host, edge_server.port, headers=headers)
    assert client.status == status
    if status == 101:
        _, hello = await client.next_event()
        assert hello["type"] == "connection_established"
    client.close()


async def test_upgrade_with_a_connection_list_like_firefox(edge_server):
    client = await RawWS.open(edge_server.host, edge_server.port, connection="keep-alive, Upgrade")
    assert client.status == 101
    client.close()
