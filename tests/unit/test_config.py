"""Configuration: typed, validated once, with errors that name the key and the file."""

from __future__ import annotations

from pathlib import Path

import pytest

from fastchat.config import ConfigError, load
from tests.support.server import ROOT


def write(tmp_path: Path, text: str) -> Path:
    path = tmp_path / "config.toml"
    path.write_text(text)
    return path


def test_defaults_and_relative_paths(tmp_path):
    config = load(write(tmp_path, '[storage]\npath = "db/chat.db"\n'), env={})
    assert config.server.host == "127.0.0.1" and config.server.port == 3000
    assert config.storage.path == tmp_path / "db" / "chat.db"  # relative to the file
    assert config.auth.token_ttl_seconds == 15 * 60 and config.auth.bcrypt_rounds == 12
    assert config.websocket.compression == "shared"


def test_the_shipped_config_toml_is_valid_and_matches_the_defaults():
    shipped = load(ROOT / "config.toml", env={})
    defaults = load(None, env={})
    assert shipped.websocket == defaults.websocket
    assert shipped.limits == defaults.limits
    assert shipped.storage.batch_max == defaults.storage.batch_max
    assert shipped.broker == defaults.broker


@pytest.mark.parametrize(
    ("text", "message"),
    [
        ("[server]\nprot = 1\n", "unknown key 'prot' in [server]"),
        ("[sever]\nport = 1\n", "unknown section [sever]"),
        ('[server]\nport = "3000"\n', "'server.port' must be an integer"),
        ("[server]\nport = 70000\n", "'server.port' must be between 0 and 65535"),
        ('[websocket]\ncompression = "gzip"\n', "'websocket.compression' must be one of"),
        ("[storage]\nbatch_max = 0\n", "'storage.batch_max' must be greater than 0"),
        ("[server]\ncors_origins = [1]\n", "'server.cors_origins' must be a list of strings"),
        ('[auth]\njwt_secret = "short"\n', "at least 32 bytes"),
        ("[limits]\nburst = true\n", "'limits.burst' must be an integer"),
        (
            "[broker]\nheartbeat_seconds = 5.0\nnode_timeout_seconds = 5.0\n",
            "'broker.node_timeout_seconds' must exceed broker.heartbeat_seconds",
        ),
        (
            '[server]\ntrusted_proxies = ["10.0.0.0/33"]\n',
            "'server.trusted_proxies' entry '10.0.0.0/33' is not an address or network",
        ),
        ("[server\n", "not valid TOML"),
    ],
)
def test_bad_config_is_refused_with_the_key_and_file(tmp_path, text, message):
    path = write(tmp_path, text)
    with pytest.raises(ConfigError) as raised:
        load(path, env={})
    assert message in str(raised.value)
    assert str(path) in str(raised.value)


def test_tls_files_are_optional_paths_relative_to_the_file(tmp_path):
    assert load(None, env={}).server.tls_cert_file is None
    text = '[server]\ntls_cert_file = "tls/cert.pem"\ntls_key_file = "/etc/key.pem"\n'
    server = load(write(tmp_path, text), env={}).server
    assert server.tls_cert_file == tmp_path / "tls" / "cert.pem"
    assert server.tls_key_file == Path("/etc/key.pem")
    with pytest.raises(ConfigError, match=r"'server\.tls_key_file' must be a path string"):
        load(write(tmp_path, '[server]\ntls_cert_file = "c"\ntls_key_file = 1\n'), env={})
    with pytest.raises(ConfigError, match="must be set together"):
        load(write(tmp_path, '[server]\ntls_key_file = "k"\n'), env={})


def test_environment_overrides_the_secret(tmp_path):
    path = write(tmp_path, '[auth]\njwt_secret = ""\n')
    secret = "s" * 40
    assert load(path, env={"FASTCHAT_JWT_SECRET": secret}).auth.jwt_secret == secret
    with pytest.raises(ConfigError, match="at least 32 bytes"):
        load(path, env={"FASTCHAT_JWT_SECRET": "short"})
