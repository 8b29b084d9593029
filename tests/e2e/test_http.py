"""The HTTP side over real sockets: static client, health, errors, limits, timeouts, shutdown."""

from __future__ import annotations

import signal
import socket
import time

import httpx
import pytest

from tests.support.accounts import register
from tests.support.client import ChatClient
from tests.support.rawhttp import read_until_closed


def raw_exchange(server, data: bytes, timeout: float = 5.0) -> bytes:
    """Send raw bytes, read until the server closes (or times out)."""
    with socket.create_connection((server.host, server.port), timeout=timeout) as sock:
        sock.sendall(data)
        return read_until_closed(sock, timeout)


def test_index_and_static_files_are_served_with_types_and_csp(server):
    index = httpx.get(server.base_url + "/")
    assert index.status_code == 200
    assert index.headers["content-type"].startswith("text/html")
    assert "script-src 'self'" in index.headers["content-security-policy"]
    assert index.headers["x-content-type-options"] == "nosniff"
    assert b"<html" in index.content.lower()
    script = httpx.get(server.base_url + "/static/app.js")
    assert script.status_code == 200
    assert "javascript" in script.headers["content-type"]
    etag = script.headers["etag"]
    assert (
        httpx.get(server.base_url + "/static/app.js", headers={"If-None-Match": etag}).status_code
        == 304
    )
    assert (
        httpx.get(server.base_url + "/static/style.css")
        .headers["content-type"]
        .startswith("text/css")
    )


def test_healthz(server):
    response = httpx.get(server.base_url + "/healthz")
    assert response.status_code == 200
    assert response.json()["status"] == "ok"


@pytest.mark.parametrize(
    "path",
    [
        "/static/../config.toml",
        "/static/%2e%2e/%2e%2e/etc/passwd",
        "/../../etc/passwd",
        "/static//etc/passwd",
    ],
)
def test_path_traversal_is_impossible(server, path):
    response = raw_exchange(
        server, f"GET {path} HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n".encode()
    )
    assert response.startswith(b"HTTP/1.1 404"), response[:80]
    assert b"root:" not in response


def test_unknown_path_and_wrong_method(server):
    assert httpx.get(server.base_url + "/nope").status_code == 404
    response = httpx.get(server.base_url + "/api/auth/login")
    assert response.status_code == 405
    assert response.json()["error"]


def test_malformed_request_gets_400(server):
    assert raw_exchange(server, b"GARBAGE\r\n\r\n").startswith(b"HTTP/1.1 400")


def test_post_without_length_gets_411_and_chunked_too(server):
    head = b"POST /api/auth/login HTTP/1.1\r\nHost: x\r\n"
    assert raw_exchange(server, head + b"\r\n").startswith(b"HTTP/1.1 411")
    chunked = head + b"Transfer-Encoding: chunked\r\n\r\n5\r\nhello\r\n0\r\n\r\n"
    assert raw_exchange(server, chunked).startswith(b"HTTP/1.1 411")


def test_oversized_body_gets_413_before_it_is_sent(server):
    head = b"POST /api/auth/login HTTP/1.1\r\nHost: x\r\nContent-Length: 99999999\r\n\r\n"
    assert raw_exchange(server, head).startswith(b"HTTP/1.1 413")


def test_oversized_headers_get_431(server):
    request = b"GET / HTTP/1.1\r\nHost: x\r\nX-Big: " + b"a" * 20000 + b"\r\n\r\n"
    assert raw_exchange(server, request).startswith(b"HTTP/1.1 431")


def test_keep_alive_serves_several_requests_on_one_connection(server):
    with httpx.Client() as client:
        for _ in range(3):
            assert client.get(server.base_url + "/healthz").status_code == 200
        assert client.get(server.base_url + "/nope").status_code == 404


def test_pipelined_requests_are_answered_in_order(server):
    one = b"GET /healthz HTTP/1.1\r\nHost: x\r\n\r\n"
    two = b"GET /nope HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n"
    response = raw_exchange(server, one + two)
    assert response.index(b"HTTP/1.1 200") < response.index(b"HTTP/1.1 404")


def test_slowloris_client_is_timed_out(make_server):
    server = make_server(server={"header_timeout_seconds": 0.5})
    started = time.monotonic()
    with socket.create_connection((server.host, server.port), timeout=5) as sock:
        sock.sendall(b"GET / HTTP/1.1\r\nHost: x\r\n")  # never finishes the head
        response = sock.recv(1024)
    assert response.startswith(b"HTTP/1.1 408")
    assert time.monotonic() - started < 4


def test_silent_connection_is_closed(make_server):
    server = make_server(server={"header_timeout_seconds": 0.5})
    with socket.create_connection((server.host, server.port), timeout=5) as sock:
        assert sock.recv(1024).startswith(b"HTTP/1.1 408")


def test_cors_preflight_and_headers_only_for_listed_origins(make_server):
    server = make_server(server={"cors_origins": ["http://allowed.example"]})
    url = server.base_url + "/api/auth/login"
    preflight = httpx.options(
        url, headers={"Origin": "http://allowed.example", "Access-Control-Request-Method": "POST"}
    )
    assert preflight.status_code == 204
    assert preflight.headers["access-control-allow-origin"] == "http://allowed.example"
    assert httpx.options(url, headers={"Origin": "http://evil.example"}).status_code == 403
    other = httpx.post(url, json={}, headers={"Origin": "http://evil.example"})
    assert "access-control-allow-origin" not in other.headers
    allowed = httpx.post(url, json={}, headers={"Origin": "http://allowed.example"})
    assert allowed.headers["access-control-allow-origin"] == "http://allowed.example"


def test_metrics_are_prometheus_text(server):
    response = httpx.get(server.base_url + "/metrics")
    assert response.status_code == 200
    assert "fastchat_connections_opened" in response.text
    assert "fastchat_store_queue_depth" in response.text


async def test_sigterm_closes_websockets_with_1001_and_exits_0(server):
    account = register(server.base_url)
    client = await ChatClient.connect(server.ws_url, account["token"])
    server.process.send_signal(signal.SIGTERM)
    assert await client.closed(10) == 1001
    assert server.stop() == 0
    assert any("stopped cleanly" in line for line in server.log)
