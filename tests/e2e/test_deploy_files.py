"""deploy/: the Grafana dashboard and the Prometheus alert rules name only real series."""

from __future__ import annotations

import json
import re

import httpx
import orjson
import pytest
from prometheus_client.parser import text_string_to_metric_families

from tests.support.accounts import register
from tests.support.interop import library_expect, library_member, varied_text
from tests.support.server import ROOT

pytestmark = pytest.mark.sqlite_only  # the deploy files: the storage backend plays no part

DASHBOARD = ROOT / "deploy" / "grafana" / "fastchat-dashboard.json"
ALERTS = ROOT / "deploy" / "prometheus" / "fastchat-alerts.yml"
_SERIES = re.compile(r"\bfastchat_[a-z0-9_]+")


def dashboard_queries() -> list[str]:
    dashboard = json.loads(DASHBOARD.read_text())
    assert dashboard["uid"] and dashboard["title"] and dashboard["schemaVersion"]
    assert [i["name"] for i in dashboard["__inputs"]] == ["DS_PROMETHEUS"]  # importable
    queries = []
    for panel in dashboard["panels"]:
        if panel["type"] == "row":
            continue
        assert panel["targets"], panel["title"]
        assert panel["datasource"]["uid"] == "${DS_PROMETHEUS}"
        queries.extend(target["expr"] for target in panel["targets"])
    return queries


def alert_expressions() -> dict[str, str]:
    """``alert: Name`` -> its ``expr:`` (each rule keeps its expression on one line)."""
    rules = re.findall(r"^\s+- alert: (\w+)\n\s+expr: (.+)$", ALERTS.read_text(), re.M)
    return dict(rules)


def test_dashboard_and_alerts_cover_what_an_operator_watches():
    queries = " ".join(dashboard_queries())
    for wanted in (
        "fastchat_open_connections",
        "fastchat_deliveries_total",
        "fastchat_bytes_out_total",
        "fastchat_deflate_out_bytes_total",
        "fastchat_slow_consumer_closes_total",
        "fastchat_store_queue_depth",
        "fastchat_store_commit_seconds_p99",
        "fastchat_store_failures_total",
    ):
        assert wanted in queries, wanted
    alerts = alert_expressions()
    assert {"FastchatStorageFailing", "FastchatWriteQueueNearBound"} <= alerts.keys()
    assert "FastchatSlowConsumerStorm" in alerts
    assert len(alerts) == ALERTS.read_text().count("- alert:")  # every rule was parsed


def test_every_series_they_name_is_in_metrics(server):
    scraped = httpx.get(server.base_url + "/metrics")
    assert scraped.status_code == 200
    exposed = {
        sample.name
        for family in text_string_to_metric_families(scraped.text)
        for sample in family.samples
    }
    named = set(_SERIES.findall(" ".join(dashboard_queries())))
    named |= set(_SERIES.findall(" ".join(alert_expressions().values())))
    assert len(named) > 20
    assert named - exposed == set()


async def test_the_compression_ratio_series_count_a_compressed_broadcast(server):
    def scrape() -> dict[str, float]:
        text = httpx.get(server.base_url + "/metrics").text
        return {
            sample.name: sample.value
            for family in text_string_to_metric_families(text)
            for sample in family.samples
        }

    before = scrape()
    ws = await library_member(server, register(server.base_url)["token"], compression="deflate")
    content = varied_text(1800, seed=11)  # under the content limit
    await ws.send(
        orjson.dumps({"type": "send_message", "roomId": "general", "content": content}).decode()
    )
    assert (await library_expect(ws, "new_message"))["message"]["content"] == content
    await ws.close()
    after = scrape()
    fed = after["fastchat_deflate_in_bytes_total"] - before["fastchat_deflate_in_bytes_total"]
    made = after["fastchat_deflate_out_bytes_total"] - before["fastchat_deflate_out_bytes_total"]
    assert fed > len(content) and 0 < made < fed / 2
