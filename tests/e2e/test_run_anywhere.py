"""Installed and run as a new user would: the client inside the package, no config needed."""

from __future__ import annotations

import re
import shutil
import socket
import subprocess
import sys

import httpx
import pytest

from tests.support.server import ROOT, ServerProcess, run_fastchat, write_config

# What a wheel is built from: the repository without local state and without the tests.
_NOT_SHIPPED = shutil.ignore_patterns(
    ".*", "__pycache__", "*.egg-info", "build", "dist", "data", "test-artifacts", "tests", "bench"
)


def assert_serves_the_client(base_url: str) -> None:
    """``/`` is the client's page, and every script and style sheet it names is served."""
    index = httpx.get(base_url + "/")
    assert index.status_code == 200 and index.headers["content-type"].startswith("text/html")
    assert 'id="login-form"' in index.text
    assets = re.findall(r'(?:src|href)="(/static/[^"]+)"', index.text)
    assert assets
    for asset in assets:
        assert httpx.get(base_url + asset).status_code == 200, asset


def test_an_installed_wheel_serves_the_client_from_outside_the_repository(tmp_path):
    source = tmp_path / "source"
    shutil.copytree(ROOT, source, ignore=_NOT_SHIPPED)
    wheels, site = tmp_path / "wheels", tmp_path / "site"
    pip = [sys.executable, "-m", "pip", "-q", "--disable-pip-version-check"]
    subprocess.run([*pip, "wheel", "--no-deps", "-w", wheels, source], check=True, timeout=300)
    (wheel,) = wheels.glob("fastchat-*.whl")
    subprocess.run([*pip, "install", "--no-deps", "--target", site, wheel], check=True, timeout=300)
    shipped = {p.relative_to(ROOT).as_posix() for p in (ROOT / "fastchat/static").rglob("*")}
    installed = {p.relative_to(site).as_posix() for p in (site / "fastchat/static").rglob("*")}
    assert shipped and installed == shipped

    elsewhere = tmp_path / "etc-fastchat"
    elsewhere.mkdir()
    env = {"PYTHONPATH": str(site)}  # the wheel's package, ahead of the editable checkout
    where = subprocess.run(
        [sys.executable, "-c", "import fastchat; print(fastchat.__file__)"],
        cwd=elsewhere, env=env, capture_output=True, text=True, check=True, timeout=60,
    )  # fmt: skip
    assert where.stdout.strip() == str(site / "fastchat" / "__init__.py")
    config = write_config(elsewhere)  # no static_dir: the packaged client
    server = ServerProcess(config, elsewhere / "data", cwd=elsewhere, env=env).start()
    try:
        assert_serves_the_client(server.base_url)
    finally:
        server.kill()


def test_run_without_a_config_file_uses_the_defaults(tmp_path):
    with socket.socket() as probe:
        try:
            probe.bind(("127.0.0.1", 3000))  # the default port
        except OSError:
            pytest.skip("port 3000 is in use on this machine")
    server = ServerProcess(None, tmp_path / "data", cwd=tmp_path).start()
    try:
        assert server.base_url == "http://127.0.0.1:3000"
        assert any("running on the built-in defaults" in line for line in server.log)
        assert_serves_the_client(server.base_url)
        assert (tmp_path / "data" / "fastchat.db").is_file()  # ./data, next to where it runs
    finally:
        assert server.stop() == 0


def test_a_missing_config_file_given_with_c_is_a_one_line_error(tmp_path):
    result = run_fastchat("run", "-c", "nope.toml", cwd=tmp_path)
    assert result.returncode == 2
    assert result.stderr == "fastchat: configuration error: nope.toml: file not found\n"
    assert not (tmp_path / "data").exists()


def test_run_help_shows_the_config_option(tmp_path):
    result = run_fastchat("run", "--help", cwd=tmp_path)
    assert result.returncode == 0
    assert "-c FILE, --config FILE" in result.stdout and "./config.toml" in result.stdout


def test_a_missing_static_dir_answers_a_404_page_and_logs_once(make_server, tmp_path):
    missing = tmp_path / "no-client-here"
    server = make_server(server={"static_dir": str(missing)})
    for _ in range(2):
        page = httpx.get(server.base_url + "/")
        assert page.status_code == 404
        assert page.headers["content-type"] == "text/html; charset=utf-8"
        assert "no browser client" in page.text and "static_dir" in page.text
    assert httpx.head(server.base_url + "/").status_code == 404
    assert httpx.get(server.base_url + "/static/app.js").status_code == 404
    assert httpx.get(server.base_url + "/healthz").status_code == 200  # the rest works
    assert [line for line in server.log if str(missing) in line] == [
        line for line in server.log if "WARNING" in line and "not found" in line
    ]
    assert len([line for line in server.log if str(missing) in line]) == 1
