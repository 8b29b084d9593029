"""permessage-deflate: negotiation table, codec round trips, interop with websockets, limits."""

from __future__ import annotations

import json
import random
import time
import tracemalloc
import zlib

import pytest
from hypothesis import given
from hypothesis import strategies as st
from websockets.extensions.permessage_deflate import (
    ClientPerMessageDeflateFactory,
    PerMessageDeflate,
    enable_client_permessage_deflate,
)
from websockets.frames import Frame, Opcode
from websockets.headers import build_extension, parse_extension
from websockets.streams import StreamReader

from fastchat.errors import CloseCode
from fastchat.ws.deflate import (
    ContextDeflater,
    ExtensionHeaderError,
    Inflater,
    InvalidCompressedData,
    MessageTooBig,
    Negotiated,
    SharedDeflater,
    negotiate,
    shared_deflater,
)
from fastchat.ws.frames import build_frame
from tests.support.frames import TAIL

CHROMIUM = "permessage-deflate; client_max_window_bits"
SHARED_ANSWER = "permessage-deflate; server_no_context_takeover; client_no_context_takeover"
DEDICATED_ANSWER = "permessage-deflate; client_no_context_takeover"


def websockets_default_offer() -> str:
    (factory,) = enable_client_permessage_deflate(None)
    return build_extension([(factory.name, factory.get_request_params())])


def chat_events(count: int, seed: int = 7) -> list[bytes]:
    rng = random.Random(seed)
    words = ["hi", "there", "how", "are", "you", "the", "quick", "brown", "fox", "lol", "ok"]
    return [
        json.dumps(
            {
                "type": "message",
                "roomId": "general",
                "message": {
                    "id": f"m{i:020d}",
                    "username": rng.choice(["alice", "bob", "carol"]),
                    "text": " ".join(rng.choices(words, k=rng.randint(1, 40))),
                    "createdAt": 1_718_000_000_000 + i,
                },
            }
        ).encode()
        for i in range(count)
    ]


def inflate_alone(data: bytes, window_bits: int = 15) -> bytes:
    """Decode one message with a decompressor that has seen nothing else.

    Output comes out in 256-byte steps so that back-references must be resolved through
    zlib's window of ``2**window_bits`` bytes, not through one big output buffer.
    """
    decoder = zlib.decompressobj(-window_bits)
    parts = [decoder.decompress(data + TAIL, 256)]
    while decoder.unconsumed_tail:
        parts.append(decoder.decompress(decoder.unconsumed_tail, 256))
    return b"".join(parts)


# --- negotiation ----------------------------------------------------------------------------


def test_websockets_default_offer_is_what_chromium_sends() -> None:
    assert websockets_default_offer() == CHROMIUM


@pytest.mark.parametrize(
    ("offers", "mode", "answer"),
    [
        ([CHROMIUM], "shared", SHARED_ANSWER),
        ([CHROMIUM], "dedicated", DEDICATED_ANSWER),
        (["permessage-deflate"], "shared", SHARED_ANSWER),  # Firefox, Safari
        (["permessage-deflate"], "dedicated", DEDICATED_ANSWER),
        (["permessage-deflate; server_no_context_takeover"], "dedicated", SHARED_ANSWER),
        (["permessage-deflate; client_no_context_takeover"], "dedicated", DEDICATED_ANSWER),
        (
            ["permessage-deflate; server_max_window_bits=10"],
            "shared",
            SHARED_ANSWER + "; server_max_window_bits=10",
        ),
        (
            ['permessage-deflate; server_max_window_bits="12"'],
            "dedicated",
            DEDICATED_ANSWER + "; server_max_window_bits=12",
        ),
        (  # a quoted-pair is unescaped before the value is read
            ['permessage-deflate; server_max_window_bits="1\\2"'],
            "shared",
            SHARED_ANSWER + "; server_max_window_bits=12",
        ),
        (["Permessage-Deflate; Client_Max_Window_Bits"], "shared", SHARED_ANSWER),
        ([" , permessage-deflate ;client_max_window_bits = 10 ,"], "shared", SHARED_ANSWER),
    ],
)
def test_accepted_offers(offers: list[str], mode: str, answer: str) -> None:
    negotiated = negotiate(offers, mode)  # type: ignore[arg-type]
    assert negotiated is not None
    assert negotiated.response_header == answer
    assert negotiated.server_no_context_takeover == ("server_no_context_takeover" in answer)
    assert negotiated.client_no_context_takeover is True


def test_negotiated_fields() -> None:
    assert negotiate(["permessage-deflate; server_max_window_bits=9"], "shared") == Negotiated(
        response_header=SHARED_ANSWER + "; server_max_window_bits=9",
        server_no_context_takeover=True,
        server_max_window_bits=9,
        client_no_context_takeover=True,
        client_max_window_bits=15,
    )
    dedicated = negotiate(["permessage-deflate; client_max_window_bits=11"], "dedicated")
    assert dedicated is not None
    assert (dedicated.server_max_window_bits, dedicated.client_max_window_bits) == (15, 11)
    assert dedicated.server_no_context_takeover is False


@pytest.mark.parametrize(
    "offer",
    [
        "permessage-deflate; foo",  # unknown parameter
        "permessage-deflate; foo=1",
        "permessage-deflate; client_max_window_bits; client_max_window_bits",  # duplicate
        "permessage-deflate; server_no_context_takeover; Server_No_Context_Takeover",
        "permessage-deflate; server_no_context_takeover=1",  # flags take no value
        "permessage-deflate; client_no_context_takeover=true",
        "permessage-deflate; server_max_window_bits",  # value required
        "permessage-deflate; server_max_window_bits=8",  # zlib cannot deflate with 256 bytes
        "permessage-deflate; server_max_window_bits=7",
        "permessage-deflate; server_max_window_bits=16",
        "permessage-deflate; server_max_window_bits=09",  # no leading zeros
        "permessage-deflate; server_max_window_bits=ten",
        "permessage-deflate; client_max_window_bits=7",
        "permessage-deflate; client_max_window_bits=16",
        'permessage-deflate; client_max_window_bits="16"',
        "x-webkit-deflate-frame",  # not our extension
        "permessage-deflate-extra",
    ],
)
@pytest.mark.parametrize("mode", ["shared", "dedicated"])
def test_unacceptable_offers_are_declined(offer: str, mode: str) -> None:
    assert negotiate([offer], mode) is None  # type: ignore[arg-type]


def test_first_acceptable_offer_wins() -> None:
    offers = [
        "x-webkit-deflate-frame, permessage-deflate; foo",
        "permessage-deflate; server_max_window_bits=8, "
        "permessage-deflate; server_max_window_bits=11",
        "permessage-deflate",
    ]
    negotiated = negotiate(offers, "shared")
    assert negotiated is not None
    assert negotiated.server_max_window_bits == 11
    assert negotiated.response_header == SHARED_ANSWER + "; server_max_window_bits=11"


def test_client_window_value_is_recorded() -> None:
    offers = ["permessage-deflate; client_max_window_bits=8"]
    negotiated = negotiate(offers, "shared")
    assert negotiated is not None
    assert negotiated.client_max_window_bits == 8
    assert "client_max_window_bits" not in negotiated.response_header


@pytest.mark.parametrize("offers", [[], [""], [" ,  , "], ["x-foo; a=b"]])
def test_no_offer_means_no_extension(offers: list[str]) -> None:
    assert negotiate(offers, "shared") is None


def test_mode_off_declines_everything() -> None:
    assert negotiate([CHROMIUM], "off") is None
    assert negotiate(["permessage-deflate;;"], "off") is None  # not even parsed


def test_unknown_mode() -> None:
    with pytest.raises(ValueError):
        negotiate([CHROMIUM], "always")  # type: ignore[arg-type]


@pytest.mark.parametrize(
    "header",
    [
        "permessage-deflate;",
        "; client_max_window_bits",
        "permessage-deflate; client_max_window_bits=",
        "permessage-deflate; server_max_window_bits=10=11",
        'permessage-deflate; server_max_window_bits="10',
        'permessage-deflate; server_max_window_bits="1 0"',  # unquoted, not a token
        "permessage-deflate client_max_window_bits",
        "permessage-deflate, ;",
        "permessage/deflate",
        "permessage-déflate",
    ],
)
def test_malformed_headers_raise(header: str) -> None:
    with pytest.raises(ExtensionHeaderError):
        negotiate([header], "shared")
    # A malformed value is refused even after an acceptable one.
    with pytest.raises(ExtensionHeaderError):
        negotiate([CHROMIUM, header], "dedicated")


@pytest.mark.parametrize(
    "offer",
    [CHROMIUM, "permessage-deflate", "permessage-deflate; server_max_window_bits=10"],
)
@pytest.mark.parametrize("mode", ["shared", "dedicated"])
def test_websockets_client_accepts_our_answer(offer: str, mode: str) -> None:
    [(_, params)] = parse_extension(offer)
    server_bits = dict(params).get("server_max_window_bits")
    factory = ClientPerMessageDeflateFactory(
        server_max_window_bits=int(server_bits) if server_bits else None,
    )
    negotiated = negotiate([offer], mode)  # type: ignore[arg-type]
    assert negotiated is not None
    [(name, answer)] = parse_extension(negotiated.response_header)
    assert name == "permessage-deflate"
    client = factory.process_response_params(answer, [])
    assert client.remote_no_context_takeover == negotiated.server_no_context_takeover
    assert client.remote_max_window_bits == negotiated.server_max_window_bits
    assert client.local_no_context_takeover is True


# --- outgoing -------------------------------------------------------------------------------


def test_shared_output_is_independently_decodable() -> None:
    deflater = SharedDeflater()
    events = chat_events(300)
    compressed = [deflater.compress(event) for event in events]
    assert compressed[1] == deflater.compress(events[1])  # no history carried over
    order = list(range(len(events)))
    random.Random(1).shuffle(order)
    for i in order:
        assert inflate_alone(compressed[i]) == events[i]
    assert sum(map(len, compressed)) < 0.85 * sum(map(len, events))


@pytest.mark.parametrize("window_bits", range(9, 16))
def test_shared_respects_window_bits(window_bits: int) -> None:
    # Repeats at a distance of 4 KiB: a 15-bit window would refer back to them.
    block = random.Random(window_bits).randbytes(4096)
    payload = block * 4
    compressed = shared_deflater(window_bits).compress(payload)
    assert inflate_alone(compressed, window_bits) == payload
    if window_bits < 13:
        with pytest.raises(zlib.error, match="distance too far back"):
            inflate_alone(SharedDeflater(15).compress(payload), window_bits)


def test_shared_deflater_cache() -> None:
    assert shared_deflater(15) is shared_deflater(15)
    assert shared_deflater(10) is not shared_deflater(15)
    assert shared_deflater(10).window_bits == 10
    for bits in (8, 16):
        with pytest.raises(ValueError):
            shared_deflater(bits)


def test_context_deflater_uses_history() -> None:
    deflater = ContextDeflater()
    decoder = zlib.decompressobj(-15)
    events = chat_events(200)
    compressed = [deflater.compress(event) for event in events]
    for event, data in zip(events, compressed, strict=True):
        assert decoder.decompress(data + TAIL) == event
    again = deflater.compress(events[0])
    assert len(again) < len(compressed[0]) // 3
    with pytest.raises(zlib.error):
        inflate_alone(again)
    with pytest.raises(ValueError):
        ContextDeflater(8)


@pytest.mark.parametrize("payload", [b"", b"a", b"{}"])
def test_tiny_and_empty_messages(payload: bytes) -> None:
    shared, context = SharedDeflater(), ContextDeflater()
    decoder = zlib.decompressobj(-15)
    for _ in range(3):  # repeated flushes with nothing in between still emit a block
        assert inflate_alone(shared.compress(payload)) == payload
        assert decoder.decompress(context.compress(payload) + TAIL) == payload


def parse_frames(stream: bytes, extension: PerMessageDeflate) -> list[bytes]:
    reader = StreamReader()
    reader.feed_data(stream)
    reader.feed_eof()
    messages = []
    while reader.buffer:
        parser = Frame.parse(reader.read_exact, mask=False, extensions=[extension])
        with pytest.raises(StopIteration) as done:
            next(parser)
        frame = done.value.value
        assert frame.opcode == Opcode.TEXT
        messages.append(bytes(frame.data))
    return messages


@pytest.mark.parametrize("mode", ["shared", "dedicated"])
def test_websockets_client_reads_our_frames(mode: str) -> None:
    negotiated = negotiate([CHROMIUM], mode)  # type: ignore[arg-type]
    assert negotiated is not None
    [(_, answer)] = parse_extension(negotiated.response_header)
    client = ClientPerMessageDeflateFactory().process_response_params(answer, [])
    deflater = SharedDeflater() if mode == "shared" else ContextDeflater()
    events = chat_events(50)
    stream = b"".join(build_frame(deflater.compress(e), rsv1=True) for e in events)
    assert parse_frames(stream, client) == events


def test_inflater_reads_websockets_client_messages() -> None:
    negotiated = negotiate([CHROMIUM], "shared")
    assert negotiated is not None
    [(_, answer)] = parse_extension(negotiated.response_header)
    client = ClientPerMessageDeflateFactory().process_response_params(answer, [])
    inflater = Inflater(64 * 1024, context_takeover=not negotiated.client_no_context_takeover)
    for event in chat_events(50):
        frame = client.encode(Frame(Opcode.TEXT, event))
        assert frame.rsv1
        assert inflater.inflate(bytes(frame.data)) == event


# --- incoming -------------------------------------------------------------------------------


def test_inflater_round_trip_and_limit() -> None:
    inflater = Inflater(1000, context_takeover=False)
    deflater = SharedDeflater()
    assert inflater.inflate(deflater.compress(b"x" * 1000)) == b"x" * 1000
    with pytest.raises(MessageTooBig):
        inflater.inflate(deflater.compress(b"x" * 1001))
    assert inflater.inflate(deflater.compress(b"ok")) == b"ok"  # messages are independent


def test_inflater_with_context_takeover() -> None:
    inflater = Inflater(64 * 1024, context_takeover=True)
    client = zlib.compressobj(6, zlib.DEFLATED, -15)
    for event in chat_events(100) * 2:
        data = client.compress(event) + client.flush(zlib.Z_SYNC_FLUSH)
        assert inflater.inflate(data[:-4]) == event
    with pytest.raises(InvalidCompressedData):
        Inflater(64 * 1024, context_takeover=False).inflate(data[:-4])


@pytest.fixture(scope="module")
def bomb() -> bytes:
    """100 MB of zeros, deflated (about 100 KB), built without holding 100 MB."""
    compressor = zlib.compressobj(9, zlib.DEFLATED, -15)
    zeros = bytes(1 << 20)
    parts = [compressor.compress(zeros) for _ in range(100)]
    parts.append(compressor.flush(zlib.Z_SYNC_FLUSH)[:-4])
    return b"".join(parts)


@pytest.mark.parametrize("context_takeover", [False, True])
def test_compression_bomb_is_cheap(bomb: bytes, context_takeover: bool) -> None:
    inflater = Inflater(64 * 1024, context_takeover=context_takeover)
    tracemalloc.start()
    started = time.perf_counter()
    try:
        with pytest.raises(MessageTooBig) as raised:
            inflater.inflate(bomb)
        _, peak = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
    assert time.perf_counter() - started < 0.5
    assert peak < 2 * 1024 * 1024
    assert raised.value.close_code == CloseCode.MESSAGE_TOO_BIG


@pytest.mark.parametrize(
    "data",
    [
        b"\xff\xff\xff\xff",  # reserved block type
        b"\x00\x05\x00\x00\x00",  # stored block whose LEN and NLEN do not match
        zlib.compress(b"hello")[:-4],  # zlib header: not raw deflate
    ],
)
def test_corrupt_data(data: bytes) -> None:
    with pytest.raises(InvalidCompressedData) as raised:
        Inflater(1024, context_takeover=False).inflate(data)
    assert raised.value.close_code == CloseCode.PROTOCOL_ERROR


def test_final_block_accepted_but_not_trailing_garbage() -> None:
    compressor = zlib.compressobj(6, zlib.DEFLATED, -15)
    final = compressor.compress(b"bye") + compressor.flush(zlib.Z_FINISH)  # BFINAL set
    inflater = Inflater(1024, context_takeover=True)
    assert inflater.inflate(final) == b"bye"
    assert inflater.inflate(SharedDeflater().compress(b"next")) == b"next"  # new stream
    with pytest.raises(InvalidCompressedData):
        Inflater(1024, context_takeover=False).inflate(final + b"\x01\x02")


@given(payload=st.binary(max_size=5000))
def test_shared_round_trip_any_bytes(payload: bytes) -> None:
    inflater = Inflater(5000, context_takeover=False)
    assert inflater.inflate(shared_deflater(15).compress(payload)) == payload


@given(messages=st.lists(st.binary(max_size=2000), max_size=20))
def test_context_round_trip_any_bytes(messages: list[bytes]) -> None:
    deflater = ContextDeflater()
    inflater = Inflater(2000, context_takeover=True)
    for message in messages:
        assert inflater.inflate(deflater.compress(message)) == message
