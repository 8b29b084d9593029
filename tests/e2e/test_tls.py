"""TLS on the server's own port: https and wss (with the hand-off to picows), bad files refused."""

from __future__ import annotations

import signal
import ssl

import httpx
import orjson
import pytest

from tests.support.accounts import register
from tests.support.certificates import Certificates, make_certificates
from tests.support.client import ChatClient
from tests.support.interop import library_expect, library_member, varied_text
from tests.support.server import ServerProcess, run_fastchat, write_config


@pytest.fixture(scope="module")
def certificates(tmp_path_factory: pytest.TempPathFactory) -> Certificates:
    return make_certificates(tmp_path_factory.mktemp("tls"))


@pytest.fixture
def tls_server(make_server, certificates: Certificates) -> ServerProcess:
    return make_server(
        server={"tls_cert_file": str(certificates.cert), "tls_key_file": str(certificates.key)}
    )


@pytest.fixture
def trusted(certificates: Certificates) -> ssl.SSLContext:
    """A client context that trusts only the test CA."""
    return ssl.create_default_context(cafile=certificates.ca)


async def test_https_and_wss_on_one_port(tls_server: ServerProcess, trusted: ssl.SSLContext):
    assert tls_server.base_url.startswith("https://") and tls_server.ws_url.startswith("wss://")
    with httpx.Client(verify=trusted, base_url=tls_server.base_url) as http:
        assert http.get("/healthz").json()["status"] == "ok"
        index = http.get("/")
        assert index.status_code == 200 and 'id="login-form"' in index.text
        account = register(http)
        other = register(http)

    # The websockets library (permessage-deflate) and picows, both over TLS, in one room.
    library = await library_member(tls_server, account["token"], ssl=trusted)
    assert "permessage-deflate" in library.response.headers["Sec-WebSocket-Extensions"]
    picows_client = await ChatClient.connect(tls_server.ws_url, other["token"], ssl_context=trusted)
    picows_client.send(type="join_room", roomId="general")
    await picows_client.expect("room_joined", roomId="general")
    large = varied_text(2000, seed=7)
    await library.send(
        orjson.dumps({"type": "send_message", "roomId": "general", "content": large}).decode()
    )
    by_picows = (await picows_client.expect("new_message"))["message"]
    assert by_picows == (await library_expect(library, "new_message"))["message"]
    assert by_picows["content"] == large
    picows_client.send(type="send_message", roomId="general", content="back over wss")
    assert (await library_expect(library, "new_message"))["message"]["content"] == "back over wss"
    await library.close()
    await picows_client.close()

    # Plain http on the TLS port gets no answer, and the server carries on.
    with pytest.raises(httpx.TransportError):
        httpx.get(tls_server.base_url.replace("https://", "http://") + "/healthz")
    with httpx.Client(verify=trusted) as http:
        assert http.get(tls_server.base_url + "/healthz").status_code == 200


async def test_sigterm_closes_wss_clients_with_1001(tls_server, trusted: ssl.SSLContext):
    with httpx.Client(verify=trusted, base_url=tls_server.base_url) as http:
        token = register(http)["token"]
    client = await ChatClient.connect(tls_server.ws_url, token, ssl_context=trusted)
    tls_server.process.send_signal(signal.SIGTERM)
    assert await client.closed(timeout=15) == 1001
    assert tls_server.stop() == 0


@pytest.mark.parametrize(
    ("cert", "key", "message"),
    [
        ("missing", "key", "missing.pem: file not found"),
        ("cert", "missing", "missing.pem: file not found"),
        ("cert", "ca_key", "the key does not belong to the certificate"),
        ("garbage", "key", "not a PEM certificate chain and its private key"),
        ("cert", None, "must be set together"),
    ],
)
def test_bad_tls_files_are_a_one_line_error(certificates, tmp_path, cert, key, message):
    garbage = tmp_path / "garbage.pem"
    garbage.write_text("-----BEGIN CERTIFICATE-----\nnot base64\n-----END CERTIFICATE-----\n")
    files = {
        "cert": certificates.cert,
        "key": certificates.key,
        "ca_key": certificates.ca.with_suffix(".key"),
        "garbage": garbage,
        "missing": tmp_path / "missing.pem",
    }
    settings = {"tls_cert_file": str(files[cert])}
    if key is not None:
        settings["tls_key_file"] = str(files[key])
    config = write_config(tmp_path, server=settings)
    result = run_fastchat("run", "-c", str(config))
    assert result.returncode == 2
    assert result.stderr.startswith("fastchat: configuration error: ")
    assert message in result.stderr and result.stderr.count("\n") == 1, result.stderr
