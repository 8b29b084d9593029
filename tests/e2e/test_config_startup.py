"""Configuration at start-up, through ``fastchat run``: errors without a traceback, and the
generated JWT secret kept across restarts."""

from __future__ import annotations

from tests.support.accounts import register
from tests.support.client import ChatClient
from tests.support.server import run_fastchat


def test_cli_reports_config_errors_without_a_traceback(tmp_path):
    path = tmp_path / "config.toml"
    path.write_text("[server]\nprot = 1\n")
    result = run_fastchat("run", "-c", str(path))
    assert result.returncode == 2
    assert "unknown key 'prot' in [server]" in result.stderr and str(path) in result.stderr
    assert "Traceback" not in result.stderr
    missing = run_fastchat("run", "-c", str(tmp_path / "nope.toml"))
    assert missing.returncode == 2 and "file not found" in missing.stderr


async def test_generated_secret_survives_a_restart(make_server):
    server = make_server()
    token = register(server.base_url)["token"]
    secret_file = server.data_dir / "jwt_secret"
    assert secret_file.exists() and secret_file.stat().st_mode & 0o777 == 0o600
    assert server.stop() == 0
    server.start()
    client = await ChatClient.connect(server.ws_url, token)  # the old token still works
    await client.close()
