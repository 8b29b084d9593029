"""The write-behind benchmark (``python -m loadtest.store``) stays usable: a tiny run end to end."""

from __future__ import annotations

import uuid
from pathlib import Path

import orjson
import pytest

from loadtest import store as bench


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
