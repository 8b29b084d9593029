"""Engine metrics: plain integers bumped on the hot path, read by Prometheus at scrape time.

Counting is an attribute increment (no locks, no label lookups); the
:class:`MetricsCollector` turns the current values into Prometheus families only when
``GET /metrics`` is scraped.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from dataclasses import dataclass, fields
from typing import TYPE_CHECKING

from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily, Metric
from prometheus_client.registry import CollectorRegistry

if TYPE_CHECKING:
    from fastchat.storage.sqlite import WriteBehind


@dataclass(slots=True)
class Metrics:
    """Counters of the whole server (monotonic unless the name says otherwise)."""

    connections_opened: int = 0
    connections_closed: int = 0
    frames_in: int = 0
    frames_out: int = 0
    deliveries: int = 0
    flushes: int = 0
    bytes_out: int = 0
    compressed_frames: int = 0
    deflate_in_bytes: int = 0
    deflate_out_bytes: int = 0
    dropped_events: int = 0
    write_pauses: int = 0
    slow_consumer_closes: int = 0
    messages_accepted: int = 0
    messages_acked: int = 0
    rate_limited: int = 0
    errors_sent: int = 0
    http_requests: int = 0


_HELP = {
    "connections_opened": "WebSocket connections opened",
    "connections_closed": "WebSocket connections closed",
    "frames_in": "WebSocket frames received",
    "frames_out": "WebSocket frames built (a broadcast counts once)",
    "deliveries": "frames delivered to connections (a broadcast counts once per member)",
    "flushes": "hub flushes (each writes once to every connection with queued bytes)",
    "bytes_out": "frame bytes delivered, as written (compressed where negotiated)",
    "compressed_frames": "frames compressed with permessage-deflate",
    "deflate_in_bytes": "payload bytes given to the shared (once per broadcast) compressor",
    "deflate_out_bytes": "bytes the shared compressor made of them",
    "dropped_events": "droppable events skipped for connections over the soft backpressure mark",
    "write_pauses": "times a connection's transport paused writing",
    "slow_consumer_closes": "connections closed for exceeding max_backpressure_bytes",
    "messages_accepted": "chat messages accepted and broadcast",
    "messages_acked": "chat messages acknowledged after commit",
    "rate_limited": "requests refused by rate limits",
    "errors_sent": "error events sent to clients",
    "http_requests": "HTTP requests answered",
}


class MetricsCollector:
    """A prometheus_client collector reading :class:`Metrics` and the writer's stats."""

    def __init__(
        self,
        metrics: Metrics,
        writer: WriteBehind,
        gauges: dict[str, Callable[[], float]],
    ):
        self._metrics = metrics
        self._writer = writer
        self._gauges = gauges

    def collect(self) -> Iterator[Metric]:
        for f in fields(Metrics):
            family = CounterMetricFamily(f"fastchat_{f.name}", _HELP[f.name])
            family.add_metric([], getattr(self._metrics, f.name))
            yield family
        for name, read in self._gauges.items():
            gauge = GaugeMetricFamily(f"fastchat_{name}", name.replace("_", " "))
            gauge.add_metric([], read())
            yield gauge
        writer = self._writer
        yield _gauge("store_queue_depth", "write-behind operations waiting", writer.queue_depth)
        yield _gauge(
            "store_healthy", "1 while the writer commits, 0 while it fails", writer.healthy
        )
        yield _counter("store_batches", "write-behind batches committed", writer.batches_committed)
        yield _counter("store_ops", "write-behind operations committed", writer.ops_committed)
        yield _counter("store_failures", "failed batch commit attempts", writer.failures_total)
        yield _counter(
            "store_commit_seconds", "time spent committing batches", writer.commit_seconds_total
        )
        recent = sorted(writer.recent_commit_seconds)
        for quantile in (0.5, 0.99):
            value = recent[min(len(recent) - 1, int(len(recent) * quantile))] if recent else 0.0
            yield _gauge(
                f"store_commit_seconds_p{int(quantile * 100)}",
                f"batch commit latency, p{int(quantile * 100)} of the last batches",
                value,
            )


def _gauge(name: str, help_text: str, value: float) -> GaugeMetricFamily:
    family = GaugeMetricFamily(f"fastchat_{name}", help_text)
    family.add_metric([], float(value))
    return family


def _counter(name: str, help_text: str, value: float) -> CounterMetricFamily:
    family = CounterMetricFamily(f"fastchat_{name}", help_text)
    family.add_metric([], float(value))
    return family


def registry_for(collector: MetricsCollector) -> CollectorRegistry:
    registry = CollectorRegistry(auto_describe=False)
    registry.register(collector)  # type: ignore[arg-type]
    return registry
