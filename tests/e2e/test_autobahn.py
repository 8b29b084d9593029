"""WebSocket conformance: Autobahn|Testsuite's fuzzingclient against fastchat's own code.

The target is ``python -m fastchat.testing.echo``: fastchat's HTTP handler, upgrade and
``Connection`` with an echo in place of the chat (docs/conformance.md). ``wstest`` is
installed into ~/.cache/fastchat-autobahn by ``shared/autobahn/setup.sh`` (found beside
the repository, as in CI) when it is missing; if that is impossible the test fails when
``CI=true`` and is skipped elsewhere.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import pytest
from websockets.asyncio.client import connect as websockets_connect
from websockets.exceptions import ConnectionClosedError

from tests.support.server import ROOT

WSTEST_HOME = Path.home() / ".cache" / "fastchat-autobahn"
# The chat refuses binary messages with 1003 by design, and so does the echo target: the
# cases that send them cannot pass. Their frames, fragments and deflate data take the same
# paths as the text cases' up to the opcode check.
BINARY_CASES = ["1.2.*", "9.2.*", "9.4.*", "9.6.*", "9.8.*", "12.2.*", "12.3.*", "12.5.*"]
# Cases without permessage-deflate do not depend on the compression mode: they run once,
# against the shared-mode target. The deflate cases run against both modes; each takes ~2 s
# (1,000 round trips), so CI runs a subset: every offer / answer pair of 13.x (13.1 to 13.7:
# context takeover, window bits 9 and 15) with 1 KiB messages and with 16 KiB messages
# auto-fragmented to 256 B, and the JSON and HTML payloads of 12.x (12.1, 12.4) at 8 KiB and
# at 64 KiB in 256 B fragments. Messages under websocket.compression_threshold (256 B) go
# out uncompressed, so the subset starts at 1 KiB. FASTCHAT_AUTOBAHN_FULL=1 runs all of
# 12.x and 13.x (docs/conformance.md).
DEFLATE_CASES = ["12.*", "13.*"]
CI_DEFLATE_CASES = [
    *(f"13.{group}.{size}" for group in range(1, 8) for size in (4, 13)),
    *(f"12.{group}.{size}" for group in (1, 4) for size in (6, 14)),
]
NON_DEFLATE_CASES = [f"{group}.*" for group in range(1, 11)]
# Faults outside fastchat, documented in docs/conformance.md. A case listed here must still
# fail: when it passes (a picows upgrade), take it out of this list and the docs.
KNOWN_FAILURES = {
    "7.1.2": "picows fails on the second close before delivering the first",
}
PASSING = {"OK", "NON-STRICT", "INFORMATIONAL"}


def _unavailable(reason: str) -> None:
    if os.environ.get("CI") == "true":
        pytest.fail(f"Autobahn|Testsuite is required in CI: {reason}")
    pytest.skip(reason)


def wstest() -> Path:
    """The wstest executable, installed into WSTEST_HOME first if it is missing."""
    executable = WSTEST_HOME / "venv" / "bin" / "wstest"
    if executable.exists():
        return executable
    setups = [folder / "shared" / "autobahn" / "setup.sh" for folder in ROOT.parents]
    setup = next((path for path in setups if path.exists()), None)
    if setup is None:
        _unavailable(f"no shared/autobahn/setup.sh in a folder above {ROOT}")
    assert setup is not None
    done = subprocess.run(
        ["bash", str(setup), str(WSTEST_HOME)], capture_output=True, text=True, timeout=600
    )
    if done.returncode != 0 or not executable.exists():
        _unavailable(f"{setup} failed:\n{done.stdout[-2000:]}\n{done.stderr[-2000:]}")
    return executable


@contextmanager
def echo_target(compression: str, log: Path) -> Iterator[str]:
    """A running ``python -m fastchat.testing.echo``; yields its ws:// URL."""
    with log.open("w") as stderr:
        process = subprocess.Popen(
            [
                sys.executable,
                "-m",
                "fastchat.testing.echo",
                "--port=0",
                f"--compression={compression}",
            ],
            cwd=ROOT,
            stdout=subprocess.PIPE,
            stderr=stderr,
            text=True,
        )
        try:
            assert process.stdout is not None
            line = process.stdout.readline()
            assert line.startswith("listening on ws://"), f"{line!r}, log: {log.read_text()}"
            yield line.split()[-1]
        finally:
            process.terminate()
            process.wait(10)


def failures(results: dict[str, dict[str, dict[str, str]]]) -> dict[str, str]:
    """``agent case`` -> its behaviours, for every case that did not pass."""
    return {
        f"{agent} {case}": f"{result['behavior']} / close {result['behaviorClose']}"
        for agent, cases in results.items()
        for case, result in cases.items()
        if result["behavior"] not in PASSING or result["behaviorClose"] not in PASSING
    }


@pytest.mark.timeout(1800)
def test_autobahn_fuzzingclient_text_cases_in_both_compression_modes(tmp_path):
    executable = wstest()
    full = os.environ.get("FASTCHAT_AUTOBAHN_FULL") == "1"
    deflate = DEFLATE_CASES if full else CI_DEFLATE_CASES
    with (
        echo_target("shared", tmp_path / "shared.log") as shared_url,
        echo_target("dedicated", tmp_path / "dedicated.log") as dedicated_url,
    ):
        spec = {
            "outdir": str(tmp_path / "reports"),
            "servers": [
                {"agent": "shared", "url": shared_url},
                {"agent": "dedicated", "url": dedicated_url},
            ],
            "cases": NON_DEFLATE_CASES + deflate,
            "exclude-cases": BINARY_CASES,
            "exclude-agent-cases": {"dedicated": NON_DEFLATE_CASES},
        }
        (tmp_path / "spec.json").write_text(json.dumps(spec))
        done = subprocess.run(
            [str(executable), "-m", "fuzzingclient", "-s", "spec.json"],
            cwd=tmp_path,
            capture_output=True,
            text=True,
        )
    assert done.returncode == 0, done.stdout[-3000:] + done.stderr[-3000:]
    results = json.loads((tmp_path / "reports" / "index.json").read_text())
    shared_deflate = {case for case in results["shared"] if case.startswith(("12.", "13."))}
    assert full or len(shared_deflate) == len(CI_DEFLATE_CASES)
    assert len(results["shared"]) > len(shared_deflate) + 200
    assert set(results["dedicated"]) == shared_deflate
    failed = failures(results)
    expected = {f"shared {case}" for case in KNOWN_FAILURES}
    assert set(failed) == expected, {
        key: failed.get(key, "passed") for key in set(failed) ^ expected
    }


@pytest.mark.parametrize(
    ("compression", "context_takeover"), [("shared", False), ("dedicated", True)]
)
async def test_the_echo_target_echoes_text_and_refuses_binary(
    tmp_path, compression, context_takeover
):
    with echo_target(compression, tmp_path / "echo.log") as url:
        async with websockets_connect(url, compression="deflate") as ws:
            extensions = ws.response.headers["Sec-WebSocket-Extensions"]
            assert extensions.startswith("permessage-deflate")
            assert ("server_no_context_takeover" not in extensions) is context_takeover
            for text in ("short", "long and compressible " * 100):
                await ws.send(text)
                assert await ws.recv() == text
            await ws.send(b"\x00\x01")
            with pytest.raises(ConnectionClosedError) as closed:
                await ws.recv()
            assert closed.value.rcvd is not None and closed.value.rcvd.code == 1003
