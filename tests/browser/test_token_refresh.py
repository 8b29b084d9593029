"""The browser client keeps its session alive: it refreshes the access token ahead of expiry
and renews the live WebSocket in place, so a 3-second token never drops the user."""

from __future__ import annotations

import json
import re
from collections.abc import Iterator
from pathlib import Path

import pytest
from chatpage import SignUp, message, send
from playwright.sync_api import WebSocketRoute, expect

from tests.support.server import ServerProcess


@pytest.fixture(scope="module")
def module_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[ServerProcess]:
    """This module's server hands out access tokens that last 3 seconds."""
    directory: Path = tmp_path_factory.mktemp("short-tokens")
    server = ServerProcess.configured(directory, auth={"token_ttl_seconds": 3}).start()
    yield server
    server.kill()


def test_the_client_refreshes_ahead_of_expiry_and_stays_connected(sign_up: SignUp) -> None:
    sockets: list[WebSocketRoute] = []

    def count(ws: WebSocketRoute) -> None:
        sockets.append(ws)
        ws.connect_to_server()

    alice = sign_up("alice", route_ws=count)
    page = alice.page
    first = json.loads(page.evaluate("localStorage.getItem('fastchat.session')"))
    assert first["refreshToken"]
    first_expiry = page.evaluate(
        "(t) => JSON.parse(atob(t.split('.')[1].replace(/-/g, '+').replace(/_/g, '/'))).exp",
        first["token"],
    )
    # Wait (in the page) until the first token has been expired for a second and a newer
    # one is saved: the socket has outlived the token it authenticated with.
    page.wait_for_function(
        """(expiry) => {
            const saved = JSON.parse(localStorage.getItem('fastchat.session'));
            const exp = JSON.parse(atob(saved.token.split('.')[1]
                .replace(/-/g, '+').replace(/_/g, '/'))).exp;
            return Date.now() / 1000 > expiry + 1 && exp > expiry;
        }""",
        arg=first_expiry,
        timeout=15_000,
    )
    expect(page.locator("#connection-status")).to_have_attribute("data-state", "connected")
    send(alice, "still here")
    expect(message(alice, "still here")).to_have_count(1)
    expect(message(alice, "still here")).not_to_have_class(re.compile(r"\bpending\b"))
    assert len(sockets) == 1  # never dropped, never reconnected
