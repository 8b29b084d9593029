"""The browser client over TLS: Chromium loads it over https and chats over wss."""

from __future__ import annotations

from collections.abc import Iterator

import pytest
from chatpage import SignUp, create_room, message, open_room, send, unique_name
from playwright.sync_api import expect

from tests.support.certificates import make_certificates
from tests.support.server import ServerProcess, write_config


@pytest.fixture(scope="module")
def chromium_args(chromium_args: list[str]) -> list[str]:
    # The test CA is not in Chromium's store; the server's certificate is still checked by
    # tests/e2e/test_tls.py with clients that trust only that CA.
    return [*chromium_args, "--ignore-certificate-errors"]


@pytest.fixture(scope="module")
def module_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[ServerProcess]:
    """The server the ``sign_up`` fixture signs people up on: here, one speaking TLS."""
    directory = tmp_path_factory.mktemp("tls-server")
    certificates = make_certificates(directory / "tls")
    config = write_config(
        directory,
        server={"tls_cert_file": str(certificates.cert), "tls_key_file": str(certificates.key)},
    )
    server = ServerProcess(config, directory / "data").start()
    yield server
    server.kill()


def test_chromium_chats_over_https_and_wss(sign_up: SignUp, module_server: ServerProcess):
    assert module_server.base_url.startswith("https://")
    alice = sign_up("alice")  # waits for the live connection: a wss WebSocket from an https page
    bob = sign_up("bob")
    assert alice.page.evaluate("location.protocol") == "https:"
    room = unique_name("tls")
    create_room(alice, room)
    open_room(bob, room)
    send(alice, "sealed in transit")
    expect(message(bob, "sealed in transit")).to_be_visible()
    expect(message(alice, "sealed in transit")).to_be_visible()
