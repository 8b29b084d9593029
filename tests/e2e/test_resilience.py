"""Abuse resistance end to end: rate limits, throttled typing, connection caps, timeouts,
the Origin check on upgrades, and bans that take effect at once."""

from __future__ import annotations

import socket
import time
from collections.abc import Iterator

import httpx
import pytest

from tests.support.accounts import PASSWORD, create_account, register, registration
from tests.support.client import ChatClient, joined
from tests.support.server import ServerProcess
from tests.support.upgrade import upgrade_request

LIMITS = {
    "burst": 3,
    "messages_per_second": 0.1,
    "flood_strikes": 3,
    "typing_per_second": 2.0,
    "auth_timeout_seconds": 0.5,
}


@pytest.fixture(scope="module")
def limited(tmp_path_factory: pytest.TempPathFactory) -> Iterator[ServerProcess]:
    """One server with small per-connection limits, shared by the tests that use fresh
    accounts and connections (so they cannot disturb each other)."""
    directory = tmp_path_factory.mktemp("limited")
    server = ServerProcess.configured(directory, limits=LIMITS).start()
    yield server
    server.kill()


def origin_upgrade(server: ServerProcess, origin: str | None) -> bytes:
    """An upgrade request to ``server`` with this Origin header (or none)."""
    headers = [("Origin", origin)] if origin is not None else []
    return upgrade_request(server.host, server.port, headers=headers)[0]


def status_line(server: ServerProcess, data: bytes) -> bytes:
    with socket.create_connection((server.host, server.port), timeout=5) as sock:
        sock.sendall(data)
        return sock.recv(4096).split(b"\r\n", 1)[0]


async def test_garbage_costs_tokens_like_requests(limited):
    client = await ChatClient.connect(limited.ws_url)  # unauthenticated, sending junk
    for _ in range(LIMITS["burst"]):
        client.send_raw(b"{not json")
        await client.expect_error("invalid_json")
    client.send_raw(b"{not json")
    await client.expect_error("rate_limited")
    for _ in range(LIMITS["flood_strikes"]):
        client.send_raw(b"{not json")
    assert await client.closed() == 1008


async def test_message_flood_is_refused_then_closed_with_1008(limited):
    alice, _ = await joined(limited.ws_url, limited.base_url)
    bob, _ = await joined(limited.ws_url, limited.base_url)
    for i in range(LIMITS["burst"] - 2):  # authenticate and join_room took two tokens
        alice.send(type="send_message", roomId="general", content=f"burst {i}")
        await bob.expect("new_message")
    alice.send(type="send_message", roomId="general", content="one too many")
    error = await alice.expect_error("rate_limited")
    assert error["type"] == "send_message"
    assert error["retryAfter"] > 0
    for _ in range(LIMITS["flood_strikes"]):
        alice.send(type="send_message", roomId="general", content="flood")
    assert await alice.closed() == 1008
    # Nothing past the burst reached the room, and the room is still fine for others.
    bob.send(type="send_message", roomId="general", content="still here")
    message = (await bob.expect("new_message"))["message"]
    assert message["content"] == "still here"
    assert not [e for e in bob.seen if e["type"] == "new_message" and e["data"]["message"][
        "content"] in ("one too many", "flood")]  # fmt: skip
    await bob.close()


async def test_typing_is_throttled(limited):
    alice, _ = await joined(limited.ws_url, limited.base_url)
    bob, _ = await joined(limited.ws_url, limited.base_url)
    for _ in range(30):
        alice.send(type="typing_start", roomId="general")
    alice.send(type="send_message", roomId="general", content="done typing")
    await bob.expect("new_message")  # everything alice caused before it has arrived
    typing = [e for e in bob.seen if e["type"] == "user_typing" and e["data"]["typing"]]
    # The bucket holds 2 x typing_per_second hints; the 30 frames take far less than 1 s.
    assert 1 <= len(typing) <= 5
    await alice.close()
    await bob.close()


async def test_unauthenticated_socket_is_closed_with_4001(limited):
    client = await ChatClient.connect(limited.ws_url)
    started = time.monotonic()
    assert await client.closed() == 4001
    assert 0.4 <= time.monotonic() - started < 4


async def test_login_and_register_are_limited_per_address(make_server):
    server = make_server(limits={"auth_per_minute": 3})
    account = register(server.base_url)  # 1
    login = {"username": account["user"]["username"], "password": PASSWORD}
    assert httpx.post(server.base_url + "/api/auth/login", json=login).status_code == 200  # 2
    wrong = {"username": account["user"]["username"], "password": "wrong password"}
    assert httpx.post(server.base_url + "/api/auth/login", json=wrong).status_code == 401  # 3
    refused = httpx.post(server.base_url + "/api/auth/login", json=login)
    assert refused.status_code == 429
    assert refused.json()["code"] == "rate_limited"
    assert int(refused.headers["retry-after"]) >= 1
    again = httpx.post(
        server.base_url + "/api/auth/register",
        json=registration("late_one"),
    )
    assert again.status_code == 429 and "retry-after" in again.headers


async def test_connection_caps_per_address_and_per_user(make_server):
    server = make_server(limits={"max_connections_per_ip": 3, "max_connections_per_user": 2})
    account = register(server.base_url)
    first = await ChatClient.connect(server.ws_url, account["token"])
    second = await ChatClient.connect(server.ws_url, account["token"])
    third = await ChatClient.connect(server.ws_url)
    third.send(type="authenticate", token=account["token"])
    assert await third.closed() == 1008  # a third connection of the same user
    assert all(event["type"] != "authenticated" for event in third.seen + third.drain())
    anonymous = await ChatClient.connect(server.ws_url)  # the address's third connection
    refused = await ChatClient.open(server.ws_url)
    assert await refused.closed() == 1013  # a fourth from the same address
    assert refused.drain() == []
    # Closing one frees its slot.
    await anonymous.close()
    again = await ChatClient.connect(server.ws_url, register(server.base_url)["token"])
    for client in (first, second, again):
        client.send(type="ping")
        await client.expect("pong")
        await client.close()


async def test_upgrade_guards_origin_and_header_timeout(make_server):
    server = make_server(
        server={"allowed_origins": ["http://good.example"], "header_timeout_seconds": 0.5}
    )
    assert status_line(server, origin_upgrade(server, "http://evil.example")) == (
        b"HTTP/1.1 403 Forbidden"
    )
    for origin in ("http://good.example", f"http://{server.host}:{server.port}", None):
        assert status_line(server, origin_upgrade(server, origin)).startswith(b"HTTP/1.1 101")
    # A socket that starts an upgrade and never finishes it is timed out.
    started = time.monotonic()
    with socket.create_connection((server.host, server.port), timeout=5) as sock:
        sock.sendall(origin_upgrade(server, None)[:-2])  # the head never ends
        answer = sock.recv(4096)
        while answer and sock.recv(4096):  # read until the server closes
            pass
    assert answer.startswith(b"HTTP/1.1 408")
    assert time.monotonic() - started < 4


async def test_ban_takes_effect_at_once(make_server):
    server = make_server()
    create_account(server, "admin", "boss")
    login = httpx.post(
        server.base_url + "/api/auth/login", json={"username": "boss", "password": PASSWORD}
    ).json()
    assert login["user"]["role"] == "admin"
    admin = await ChatClient.connect(server.ws_url, login["token"])
    target, account = await joined(server.ws_url, server.base_url)
    other_tab = await ChatClient.connect(server.ws_url, account["token"])

    admin.send(type="ban_user", userId=account["user"]["id"], reason="spam")
    await admin.expect("moderation_done", action="ban")
    for client in (target, other_tab):
        assert (await client.expect("banned"))["reason"] == "spam"
        assert await client.closed() == 4003

    name = account["user"]["username"]
    refused = httpx.post(
        server.base_url + "/api/auth/login", json={"username": name, "password": PASSWORD}
    )
    assert refused.status_code == 403 and refused.json()["code"] == "banned"
    me = httpx.get(
        server.base_url + "/api/auth/me", headers={"Authorization": f"Bearer {account['token']}"}
    )
    assert me.status_code == 403
    old_token = await ChatClient.connect(server.ws_url)
    old_token.send(type="authenticate", token=account["token"])
    await old_token.expect_error("banned")
    assert await old_token.closed() == 4003
    await admin.close()
