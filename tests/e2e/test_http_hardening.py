"""The HTTP handler under attack, over real sockets against a real server process:
backpressure, deadlines, per-address caps, lingering close, Range digits, trusted proxies."""

from __future__ import annotations

import http.client
import re
import select
import socket
import time

import httpx
import orjson
import pytest
from hypothesis import given
from hypothesis import strategies as st

from fastchat.web.uploads import _byte_range
from tests.support.accounts import register
from tests.support.rawhttp import read_until_closed
from tests.support.server import ServerProcess
from tests.support.waiting import wait_until_sync

pytestmark = pytest.mark.sqlite_only  # transport: the storage backend plays no part

MIB = 1024 * 1024
OTHER_ADDRESS = "127.0.0.2"  # also loopback: a second client address on this machine


def rss_bytes(server: ServerProcess) -> int:
    """The server process's resident memory (VmRSS)."""
    assert server.process is not None
    with open(f"/proc/{server.process.pid}/status") as status:
        for line in status:
            if line.startswith("VmRSS:"):
                return int(line.split()[1]) * 1024
    raise AssertionError("no VmRSS line")


def non_reading_socket(server: ServerProcess) -> socket.socket:
    """A connection with a tiny receive buffer whose owner never reads."""
    sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4096)
    sock.connect((server.host, server.port))
    sock.setblocking(False)
    return sock


def send_until_blocked(sock: socket.socket, data: bytes, budget: float = 3.0) -> int:
    """Send as much of ``data`` as the server takes; stop when it stops reading."""
    view = memoryview(data)
    sent = 0
    deadline = time.monotonic() + budget
    while sent < len(data) and time.monotonic() < deadline:
        _, writable, _ = select.select([], [sock], [], 0.5)
        if not writable:
            break  # the server has stopped reading from us
        sent += sock.send(view[sent:])
    return sent


def assert_rss_stays_below(server: ServerProcess, limit: int, seconds: float = 1.5) -> None:
    """Sample the server's memory for a while, answering /healthz on another connection."""
    with httpx.Client(base_url=server.base_url, timeout=5) as other:
        deadline = time.monotonic() + seconds
        while time.monotonic() < deadline:
            assert other.get("/healthz").status_code == 200
            rss = rss_bytes(server)
            assert rss < limit, f"server RSS {rss / MIB:.0f} MiB"
            time.sleep(0.05)


def trickle_body(server: ServerProcess, interval: float, budget: float = 6.0) -> bytes:
    """Send a login head and then one body byte per ``interval`` until the server answers."""
    with socket.create_connection((server.host, server.port), timeout=5) as sock:
        sock.sendall(b"POST /api/auth/login HTTP/1.1\r\nHost: x\r\nContent-Length: 1000\r\n\r\n")
        deadline = time.monotonic() + budget
        while time.monotonic() < deadline:
            readable, _, _ = select.select([sock], [], [], interval)
            if readable:
                return read_until_closed(sock, 2)
            sock.sendall(b"x")
    return b""


def statuses(reply: bytes) -> list[bytes]:
    """The status codes of the answers in ``reply`` (bodies here are JSON, never HTTP)."""
    return re.findall(rb"HTTP/1\.1 (\d{3}) ", reply)


def body_json(reply: bytes) -> dict:
    return orjson.loads(reply.split(b"\r\n\r\n", 1)[1])


# --- 1. backpressure ----------------------------------------------------------------------


def assert_unread_pipelines_cost_little(
    server: ServerProcess, request: bytes, connections: int, count: int
) -> None:
    """Pipeline ``count`` copies of ``request`` on connections that never read: the server
    must stop reading from them, grow by less than 48 MiB and keep answering others."""
    baseline = rss_bytes(server)
    sockets = [non_reading_socket(server) for _ in range(connections)]
    try:
        for sock in sockets:
            send_until_blocked(sock, request * count)
        assert_rss_stays_below(server, baseline + 48 * MIB)
    finally:
        for sock in sockets:
            sock.close()


def test_pipelined_requests_never_read_keep_memory_bounded(server):
    # index.html is ~6 KiB: buffering every answer would take ~200 MiB
    assert_unread_pipelines_cost_little(server, b"GET / HTTP/1.1\r\nHost: x\r\n\r\n", 4, 8000)


def test_pipelined_downloads_are_streamed(server):
    content = bytes(range(256)) * (16 * 1024)  # 4 MiB
    with httpx.Client(base_url=server.base_url) as http:
        token = register(http)["token"]
        uploaded = http.post(
            "/api/chat/upload",
            content=content,
            headers={"Authorization": f"Bearer {token}", "X-Filename": "big.bin"},
        )
        assert uploaded.status_code == 201
        url = uploaded.json()["file"]["url"]
        assert http.get(url, headers={"Authorization": f"Bearer {token}"}).content == content
    request = f"GET {url} HTTP/1.1\r\nHost: x\r\nAuthorization: Bearer {token}\r\n\r\n"
    # holding the answers would take 3 x 40 x 4 MiB
    assert_unread_pipelines_cost_little(server, request.encode(), 3, 40)


def test_a_client_that_reads_nothing_is_disconnected(make_server):
    server = make_server(server={"send_timeout_seconds": 0.5})
    with httpx.Client(base_url=server.base_url) as http:
        token = register(http)["token"]
        auth = {"Authorization": f"Bearer {token}"}
        uploaded = http.post("/api/chat/upload", content=bytes(4 * MIB), headers=auth)
        url = uploaded.json()["file"]["url"]
        request = f"GET {url} HTTP/1.1\r\nHost: x\r\nAuthorization: Bearer {token}\r\n\r\n"
        sock = non_reading_socket(server)
        try:
            sock.sendall(request.encode() * 2)  # more than the socket buffers hold
            wait_until_sync(
                lambda: any("server.send_timeout_seconds" in line for line in server.log)
            )
        finally:
            sock.close()
        assert http.get("/healthz").status_code == 200


# --- 2. slow requests and per-address caps ------------------------------------------------


def test_whole_request_deadline(make_server):
    server = make_server(
        server={
            "request_timeout_seconds": 1.0,
            "header_timeout_seconds": 5.0,
            "min_body_bytes_per_second": 1,
        }
    )
    reply = trickle_body(server, interval=0.1)  # each byte in time, the whole far too slow
    assert reply.startswith(b"HTTP/1.1 408 "), reply[:80]
    assert body_json(reply) == {"error": "Request timeout"}
    wait_until_sync(lambda: any("server.request_timeout_seconds" in line for line in server.log))


def test_minimum_body_rate(make_server):
    server = make_server(server={"header_timeout_seconds": 1.0, "min_body_bytes_per_second": 20})
    reply = trickle_body(server, interval=0.2)  # 5 bytes a second, never idle for 1 s
    assert reply.startswith(b"HTTP/1.1 408 "), reply[:80]
    wait_until_sync(lambda: any("server.min_body_bytes_per_second" in line for line in server.log))


def test_connections_per_address_are_capped_and_the_shedding_logged_once(make_server):
    server = make_server(server={"max_http_connections_per_ip": 3})
    held = [socket.create_connection((server.host, server.port), timeout=5) for _ in range(3)]
    try:
        for _ in range(5):
            with socket.create_connection((server.host, server.port), timeout=5) as sock:
                reply = read_until_closed(sock, 5)
            assert reply.startswith(b"HTTP/1.1 503 "), reply[:80]
            assert body_json(reply) == {"error": "Too many connections from your address"}
        # another address is not affected
        other = httpx.HTTPTransport(local_address=OTHER_ADDRESS)
        with httpx.Client(base_url=server.base_url, transport=other) as http:
            assert http.get("/healthz").status_code == 200
        # a closed connection frees its place
        held.pop().close()

        def served() -> bool:
            with httpx.Client(base_url=server.base_url) as http:
                return http.get("/healthz").status_code == 200

        wait_until_sync(served)
    finally:
        for sock in held:
            sock.close()
    shed = [line for line in server.log if "max_http_connections_per_ip" in line]
    assert len(shed) == 1, shed  # one line per event kind and window, not one per connection


# --- 3. lingering close ------------------------------------------------------------------


def test_a_client_that_sends_everything_first_gets_the_413(make_server):
    server = make_server(uploads={"max_bytes": 1024})
    conn = http.client.HTTPConnection(server.host, server.port, timeout=10)
    try:
        conn.request("POST", "/api/chat/upload", body=b"x" * (4 * MIB))
        response = conn.getresponse()
        assert response.status == 413
        assert orjson.loads(response.read()) == {"error": "Body too large (limit 1024 bytes)"}
    finally:
        conn.close()


def test_a_client_that_sends_everything_first_gets_the_431(server):
    conn = http.client.HTTPConnection(server.host, server.port, timeout=10)
    try:
        conn.request(
            "POST", "/api/auth/login", body=b"x" * (2 * MIB), headers={"X-Big": "a" * 20000}
        )
        response = conn.getresponse()
        assert response.status == 431
        assert orjson.loads(response.read()) == {"error": "Request header fields too large"}
    finally:
        conn.close()


def test_a_client_that_sends_everything_first_gets_the_400(server):
    with socket.create_connection((server.host, server.port), timeout=10) as sock:
        sock.sendall(b"GARBAGE\r\n\r\n" + b"x" * (4 * MIB))
        reply = read_until_closed(sock, 10)
    assert reply.startswith(b"HTTP/1.1 400 "), reply[:80]
    assert body_json(reply) == {"error": "Malformed HTTP request"}


# --- 4. Range digits and pipelined garbage -----------------------------------------------


def test_ranges_with_thousands_of_digits(server):
    with httpx.Client(base_url=server.base_url) as http:
        token = register(http)["token"]
        auth = {"Authorization": f"Bearer {token}"}
        uploaded = http.post("/api/chat/upload", content=b"0123456789", headers=auth)
        url = uploaded.json()["file"]["url"]
        huge = "9" * 5000

        beyond = http.get(url, headers={**auth, "Range": f"bytes={huge}-"})
        assert beyond.status_code == 416
        assert beyond.headers["content-range"] == "bytes */10"
        to_the_end = http.get(url, headers={**auth, "Range": f"bytes=2-{huge}"})
        assert to_the_end.status_code == 206
        assert to_the_end.content == b"23456789"
        suffix = http.get(url, headers={**auth, "Range": f"bytes=-{huge}"})
        assert suffix.status_code == 206
        assert suffix.content == b"0123456789"
        padded = http.get(url, headers={**auth, "Range": "bytes=" + "0" * 5000 + "7-"})
        assert padded.content == b"789"
        assert http.get("/healthz").status_code == 200


@given(st.from_regex(r"bytes=\d{0,30}-\d{0,30}", fullmatch=True), st.integers(1, 10**12))
def test_byte_range_is_inside_the_file_or_none(header: str, size: int) -> None:
    span = _byte_range(header, size)
    if span is not None:
        start, end = span
        assert 0 <= start <= end < size


def test_pipelined_requests_before_garbage_get_their_answers(server):
    valid = b"GET /healthz HTTP/1.1\r\nHost: x\r\n\r\n"
    with socket.create_connection((server.host, server.port), timeout=5) as sock:
        sock.sendall(valid * 3 + b"GARBAGE\r\n\r\n")
        reply = read_until_closed(sock, 5)
    assert statuses(reply) == [b"200", b"200", b"200", b"400"]


def test_too_deep_a_pipeline_is_refused_after_the_answers(server):
    request = b"GET /healthz HTTP/1.1\r\nHost: x\r\n\r\n"
    with socket.create_connection((server.host, server.port), timeout=5) as sock:
        sock.sendall(request * 100)
        reply = read_until_closed(sock, 5)
    assert statuses(reply) == [b"200"] * 64 + [b"429"]


# --- 5. trusted proxies ------------------------------------------------------------------


def login_attempt(http: httpx.Client, forwarded_for: str) -> int:
    response = http.post(
        "/api/auth/login",
        json={"username": "nobody", "password": "wrong password"},
        headers={"X-Forwarded-For": forwarded_for},
    )
    return response.status_code


def test_forwarded_for_counts_only_from_a_trusted_proxy(make_server):
    forwarded_first = "203.0.113.7"
    server = make_server(
        server={"trusted_proxies": [OTHER_ADDRESS + "/32"]}, limits={"auth_per_minute": 2}
    )
    proxy = httpx.HTTPTransport(local_address=OTHER_ADDRESS)
    with httpx.Client(base_url=server.base_url, transport=proxy) as via_proxy:
        assert login_attempt(via_proxy, forwarded_first) == 401
        assert login_attempt(via_proxy, forwarded_first) == 401
        assert login_attempt(via_proxy, forwarded_first) == 429  # that client is limited
        # a forged entry left of what the proxy appended changes nothing
        assert login_attempt(via_proxy, f"198.51.100.1, {forwarded_first}") == 429
        # another client behind the same proxy is not limited; trusted hops are skipped
        assert login_attempt(via_proxy, "203.0.113.8") == 401
        assert login_attempt(via_proxy, f"203.0.113.9, {OTHER_ADDRESS}") == 401

    with httpx.Client(base_url=server.base_url) as direct:  # 127.0.0.1: not a trusted proxy
        assert login_attempt(direct, "203.0.113.20") == 401
        assert login_attempt(direct, "203.0.113.21") == 401
        assert login_attempt(direct, "203.0.113.22") == 429  # its header is ignored
