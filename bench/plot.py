"""Charts from the fan-out load generator's JSON: ``python bench/plot.py RUN.json... -o DIR``.

Reads what ``python -m loadtest.fanout ... --json PATH`` writes (``{"argv", "results"}``)
or a bare list of runs, and writes PNGs into DIR:

* ``fanout_throughput.png``: deliveries/s against room size, one bar per server (and
  compression) side by side. Saturating runs are used when there are any; where several
  runs share a bar, the best one is shown.
* ``fanout_latency.png``: p50/p90/p99 delivery latency against the offered message rate,
  one panel per room size, from the fixed-rate runs.
* ``idle_memory.png``: server memory per idle connection, when idle-memory runs are given.

Needs matplotlib, which the server does not: run it from a venv that has it.
"""

from __future__ import annotations

import argparse
import json
import sys
from collections import defaultdict
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import matplotlib

matplotlib.use("Agg")  # files only, no display
import matplotlib.pyplot as plt

PERCENTILES = {"p50": ("-", "o"), "p90": ("--", "s"), "p99": (":", "^")}  # line, marker


@dataclass(frozen=True, slots=True)
class Run:
    """One fan-out measurement, whatever the file's spelling of the fields."""

    series: str  # the server, with "+deflate" when receivers negotiated compression
    clients: int
    rate: float | None  # offered messages/s; None when the publishers saturate
    deliveries_per_s: float
    latency_ms: dict[str, float]


@dataclass(frozen=True, slots=True)
class IdleRun:
    """One idle-memory measurement."""

    series: str
    kib_per_connection: float


def _series(raw: dict[str, Any]) -> str:
    server = raw.get("target") or raw.get("server") or "?"
    return f"{server}+deflate" if raw.get("compression") else str(server)


def load(paths: list[Path]) -> tuple[list[Run], list[IdleRun]]:
    """Read every file; ``results`` of a load-generator file, or a list of runs."""
    runs: list[Run] = []
    idle: list[IdleRun] = []
    for path in paths:
        data = json.loads(path.read_text(encoding="utf-8"))
        entries = data["results"] if isinstance(data, dict) else data
        for raw in entries:
            if raw.get("mode") == "idle-memory":
                idle.append(IdleRun(_series(raw), float(raw["kib_per_connection"])))
                continue
            rate = raw.get("offered_per_s", raw.get("rate"))
            runs.append(
                Run(
                    series=_series(raw),
                    clients=int(raw["clients"]),
                    rate=float(rate) if isinstance(rate, int | float) and rate > 0 else None,
                    deliveries_per_s=float(raw["deliveries_per_s"]),
                    latency_ms={k: float(v) for k, v in (raw.get("latency_ms") or {}).items()},
                )
            )
    return runs, idle


def plot_throughput(runs: list[Run], out: Path) -> Path:
    """Grouped bars: deliveries/s per room size, one bar per series."""
    saturating = [run for run in runs if run.rate is None] or runs
    best: dict[tuple[str, int], float] = {}
    for run in saturating:
        key = (run.series, run.clients)
        best[key] = max(best.get(key, 0.0), run.deliveries_per_s)
    sizes = sorted({clients for _, clients in best})
    series = sorted({name for name, _ in best})
    width = 0.8 / len(series)
    fig, ax = plt.subplots(figsize=(8, 4.5))
    for i, name in enumerate(series):
        xs = [j + (i - (len(series) - 1) / 2) * width for j in range(len(sizes))]
        heights = [best.get((name, size), 0.0) for size in sizes]
        bars = ax.bar(xs, heights, width, label=name)
        ax.bar_label(bars, labels=[f"{h / 1000:,.0f}k" if h else "" for h in heights], fontsize=8)
    ax.set_xticks(range(len(sizes)), [f"{size:,}" for size in sizes])
    ax.set_xlabel("clients in the room")
    ax.set_ylabel("deliveries / s")
    ax.set_title("Fan-out throughput" + (" (saturating publishers)" if saturating != runs else ""))
    ax.yaxis.set_major_formatter(lambda value, _: f"{value:,.0f}")
    ax.legend()
    ax.grid(axis="y", alpha=0.3)
    return _save(fig, out / "fanout_throughput.png")


def plot_latency(runs: list[Run], out: Path) -> Path | None:
    """Latency percentiles against offered rate, one panel per room size."""
    paced = [run for run in runs if run.rate is not None and run.latency_ms]
    if not paced:
        return None
    by_size: dict[int, list[Run]] = defaultdict(list)
    for run in paced:
        by_size[run.clients].append(run)
    sizes = sorted(by_size)
    fig, axes = plt.subplots(
        1, len(sizes), figsize=(6 * len(sizes), 4.5), squeeze=False, sharey=True
    )
    colors = plt.rcParams["axes.prop_cycle"].by_key()["color"]
    names = sorted({run.series for run in paced})
    for ax, size in zip(axes[0], sizes, strict=True):
        for color, name in zip(colors, names, strict=False):
            points = sorted((run for run in by_size[size] if run.series == name), key=_rate)
            for pct, (line, marker) in PERCENTILES.items():
                xs = [_rate(run) for run in points if pct in run.latency_ms]
                ys = [run.latency_ms[pct] for run in points if pct in run.latency_ms]
                if xs:
                    ax.plot(xs, ys, line, marker=marker, color=color, label=f"{name} {pct}")
        ax.set_title(f"{size:,} clients")
        ax.set_xlabel("offered messages / s")
        ax.set_yscale("log")
        ax.grid(alpha=0.3, which="both")
    axes[0][0].set_ylabel("delivery latency (ms)")
    axes[0][-1].legend(fontsize=8)
    return _save(fig, out / "fanout_latency.png")


def plot_idle(idle: list[IdleRun], out: Path) -> Path | None:
    """Bars: server memory per idle connection."""
    if not idle:
        return None
    fig, ax = plt.subplots(figsize=(6, 4))
    bars = ax.bar([run.series for run in idle], [run.kib_per_connection for run in idle])
    ax.bar_label(bars, fmt="%.1f KiB")
    ax.set_ylabel("KiB per idle connection")
    ax.set_title("Server memory per connection")
    ax.grid(axis="y", alpha=0.3)
    return _save(fig, out / "idle_memory.png")


def _rate(run: Run) -> float:
    return run.rate or 0.0


def _save(fig: Any, path: Path) -> Path:
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)
    return path


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("results", nargs="+", type=Path, help="JSON files of loadtest.fanout")
    parser.add_argument("-o", "--out", type=Path, default=Path("docs/img"), help="output folder")
    args = parser.parse_args(argv)
    runs, idle = load(args.results)
    if not runs and not idle:
        print("no runs in the given files", file=sys.stderr)
        return 1
    args.out.mkdir(parents=True, exist_ok=True)
    written = [plot_throughput(runs, args.out)] if runs else []
    written += [path for path in (plot_latency(runs, args.out), plot_idle(idle, args.out)) if path]
    for path in written:
        print(path)
    return 0


if __name__ == "__main__":
    sys.exit(main())
