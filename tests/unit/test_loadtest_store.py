"""The write-behind benchmark (``python -m loadtest.store``) stays usable: a tiny run end to end."""

from __future__ import annotations

import time
import uuid
from pathlib import Path

import apsw
import orjson
import pytest

from fastchat.storage import base
from loadtest import reads
from loadtest import store as bench
from tests.support import stamps


def test_tiny_run_reports_both_client_id_kinds(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    monkeypatch.setattr(bench, "CACHE", tmp_path / "cache")
    out = tmp_path / "results.jsonl"
    args = ["--prefill", "300", "--messages", "500", "--warmup", "100", "--batch-max", "50"]
    bench.main([*args, "--window", "200", "--dir", str(tmp_path), "--json", str(out)])
    results = [orjson.loads(line) for line in out.read_bytes().splitlines()]
    assert [r["client_ids"] for r in results] == ["v7", "random"]
    assert all(r["messages"] == 500 and r["messages_per_second"] > 0 for r in results)
    assert all(r["batches"] >= 10 for r in results)  # batch_max 50: many batches, not one
    assert "messages/s" in capsys.readouterr().out
    assert len(list((tmp_path / "cache").glob("store-*.db"))) == 2  # one template per kind


def test_client_ids_look_like_what_browsers_send() -> None:
    for make, version in ((bench.CLIENT_IDS["v7"], 7), (bench.CLIENT_IDS["random"], 4)):
        value = make()
        parsed = uuid.UUID(value)
        assert str(parsed) == value and parsed.version == version
        assert parsed.variant == uuid.RFC_4122


def test_prefill_is_dated_before_the_client_id_window_and_reads_run_on_it(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    template = bench._template(600, "random", 100, tmp_path / "cache")
    capsys.readouterr()
    conn = apsw.Connection(str(template))
    oldest, newest, count = conn.execute(
        "SELECT MIN(created_at), MAX(created_at), COUNT(*) FROM messages"
    ).fetchall()[0]
    conn.close()
    assert count == 600
    assert newest[:13] < base.dedupe_hours()[-1]  # no prefilled clientId is in the window
    assert oldest[:10] <= stamps.iso(time.time() - (bench.PREFILL_DAYS - 1) * 86400)[:10]

    reads.main(["--db", str(template), "--samples", "50", "--limit", "10"])
    lines = capsys.readouterr().out.splitlines()
    assert [line.split(":")[0].strip() for line in lines[1:]] == ["page", "catch_up"]
    assert all("p99" in line for line in lines[1:])
