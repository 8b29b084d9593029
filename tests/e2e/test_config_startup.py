"""Configuration at start-up, through ``fastchat run``: errors without a traceback, and the
generated JWT secret kept across restarts."""

from __future__ import annotations

import sqlite3

from tests.support.accounts import register
from tests.support.client import ChatClient
from tests.support.server import run_fastchat, write_config


def test_cli_reports_config_errors_without_a_traceback(tmp_path):
    path = tmp_path / "config.toml"
    path.write_text("[server]\nprot = 1\n")
    result = run_fastchat("run", "-c", str(path))
    assert result.returncode == 2
    assert "unknown key 'prot' in [server]" in result.stderr and str(path) in result.stderr
    assert "Traceback" not in result.stderr
    missing = run_fastchat("run", "-c", str(tmp_path / "nope.toml"))
    assert missing.returncode == 2 and "file not found" in missing.stderr


def test_a_newer_schema_and_an_unusable_data_folder_are_one_line_errors(tmp_path):
    config = write_config(tmp_path)
    (tmp_path / "data").mkdir()
    with sqlite3.connect(tmp_path / "data" / "chat.db") as db:
        db.execute("PRAGMA user_version = 999")
    newer = run_fastchat("run", "-c", str(config))
    assert newer.returncode == 2 and "schema version 999 is newer" in newer.stderr
    assert "Traceback" not in newer.stderr

    blocked = tmp_path / "blocked"
    blocked.write_text("a file where the data folder should be")
    config = write_config(
        tmp_path, storage={"path": str(blocked / "chat.db"), "uploads_dir": str(blocked / "up")}
    )
    unusable = run_fastchat("run", "-c", str(config))
    assert unusable.returncode == 2 and "cannot start" in unusable.stderr
    assert "Traceback" not in unusable.stderr


async def test_generated_secret_survives_a_restart(make_server):
    server = make_server()
    token = register(server.base_url)["token"]
    secret_file = server.data_dir / "jwt_secret"
    assert secret_file.exists() and secret_file.stat().st_mode & 0o777 == 0o600
    assert server.stop() == 0
    server.start()
    client = await ChatClient.connect(server.ws_url, token)  # the old token still works
    await client.close()
