"""Where a message's loop-thread CPU goes: a saturated room, in-process, stage by stage.

``python -m bench.stages`` builds the real server objects (:class:`fastchat.app.App`: chat,
hub, sessions, the SQLite write-behind on a temporary data folder) with real Connections
over counting sockets (:func:`bench.support.make_members`), joins ``--members`` users to one
room, and feeds ``--messages`` ``send_message`` texts from ``--publishers`` of them through
``Sessions.on_text``, ``--burst`` per loop iteration, as a saturated room receives them.

It reports the loop thread's and the writer thread's CPU per message (``time.thread_time``
and the writer's ``pthread`` clock), first uninstrumented, then with each stage wrapped in a
timer (the wrapper's own cost, calibrated on an empty function, is subtracted). Socket
writes cost nothing here (the kernel's share is measured by ``loadtest.fanout``), so this is
the Python work alone: compare runs before and after a change, on the same machine.
"""

from __future__ import annotations

import argparse
import asyncio
import dataclasses
import gc
import tempfile
import threading
import time
import uuid
from collections.abc import Callable
from pathlib import Path
from typing import Any

import orjson
import uvloop

from bench.support import bench_config, make_members
from fastchat import protocol
from fastchat.app import App
from fastchat.chat import messages as messages_module
from fastchat.clock import utc_now_iso
from fastchat.config import LimitsConfig
from fastchat.ids import new_id
from fastchat.storage import ops
from fastchat.ws.connection import Connection
from loadtest.procs import LOAD_LIMITS

# (label, owner, attribute): the owner's attribute is replaced by a timing wrapper. Inner
# stages are listed after the stage that calls them; "send_message (rest)" is the handler
# minus its inner stages.
Stage = tuple[str, Any, str]


def _stages(app: App) -> list[Stage]:
    chat = app.chat
    return [
        ("parse (protocol.parse)", protocol, "parse"),
        ("send_message handler", chat.messages, "send_message"),
        ("  message dict (message_json)", protocol, "message_json"),
        ("  encode (event: orjson)", messages_module, "event"),
        ("  hub publish (frame + log)", app.broker, "publish"),
        ("  history window", chat.history, "remember"),
        ("  ack record (in_flight + filter)", chat.messages._acks, "in_flight"),
        ("  write-behind hand-off (WriteBehind.submit)", app.writer, "submit"),
        ("hub flush (cursors + writes)", app.hub, "flush"),
        ("acks after commit (writer _deliver)", app.writer, "_deliver"),
    ]


class Timer:
    """Wraps callables, summing the thread CPU time spent in each (``thread_time_ns``).

    ``inside`` is what a wrapper adds to its own stage's total (per call), ``whole`` what it
    adds to the stage that calls it; both are measured around an empty function.
    """

    def __init__(self) -> None:
        self.spent: dict[str, int] = {}
        self.calls: dict[str, int] = {}
        self.inside = 0.0
        self.whole = 0.0

    def wrap(self, label: str, fn: Callable[..., Any]) -> Callable[..., Any]:
        clock = time.thread_time_ns
        spent, calls = self.spent, self.calls
        spent[label] = 0
        calls[label] = 0

        def timed(*args: Any, **kwargs: Any) -> Any:
            started = clock()
            try:
                return fn(*args, **kwargs)
            finally:
                spent[label] += clock() - started
                calls[label] += 1

        return timed

    def calibrate(self, rounds: int = 200_000) -> None:
        empty = self.wrap("_empty", lambda: None)
        started = time.thread_time_ns()
        for _ in range(rounds):
            empty()
        self.whole = (time.thread_time_ns() - started) / rounds
        self.inside = self.spent.pop("_empty") / rounds
        del self.calls["_empty"]

    def per_message(self, count: int, total_ns: float) -> dict[str, float]:
        """Each stage's own time per message in µs (children and wrappers taken out)."""
        labels = list(self.spent)
        outer = [label for label in labels if not label.startswith(" ")]
        inner = [label for label in labels if label.startswith(" ")]
        own = {label: self.spent[label] - self.calls[label] * self.inside for label in labels}
        handler = "send_message handler"
        own[handler] -= sum(self.calls[label] for label in inner) * self.whole
        result = {label: own[label] / count / 1e3 for label in labels}
        result["  send_message (rest: checks, stamp, dicts)"] = result[handler] - sum(
            result[label] for label in inner
        )
        wrappers = sum(self.calls[label] for label in outer) * (self.whole - self.inside)
        rest = total_ns - sum(self.spent[label] for label in outer) - wrappers
        result["everything else (session, timers, loop)"] = rest / count / 1e3
        return result


def _texts(count: int, room_id: str, client_ids: str) -> list[str]:
    content = "x" * 100
    make = new_id if client_ids == "v7" else lambda: str(uuid.uuid4())
    return [
        orjson.dumps(
            {"type": "send_message", "roomId": room_id, "content": content, "clientId": make()}
        ).decode()
        for _ in range(count)
    ]


async def _world(data_dir: Path, members: int) -> tuple[App, list[Connection], str]:
    config = dataclasses.replace(bench_config(data_dir), limits=LimitsConfig(**LOAD_LIMITS))
    app = App(config)
    room_id = next(iter(app.chat.directory.by_id))
    conns = make_members(app.hub, app.metrics, members)
    for i, conn in enumerate(conns):
        user_id = str(uuid.uuid4())
        now = utc_now_iso()
        await app.writer.execute(
            ops.insert_user(
                id=user_id, username=f"user{i}", email=None, password_hash="x", created_at=now
            )
        )
        token = app.tokens.issue(user_id, f"user{i}", "user")
        app.hub.opened(conn)
        app.sessions.on_open(conn)
        app.sessions.on_text(conn, orjson.dumps({"type": "authenticate", "token": token}).decode())
        app.sessions.on_text(conn, orjson.dumps({"type": "join_room", "roomId": room_id}).decode())
    await asyncio.sleep(0.05)
    return app, conns, room_id


async def _run(app: App, publishers: list[Connection], texts: list[str], burst: int) -> None:
    """Feed ``texts`` round-robin from ``publishers``, ``burst`` per loop iteration, then
    wait until every message is committed and acked."""
    on_text = app.sessions.on_text
    acked_before = app.metrics.messages_acked
    for start in range(0, len(texts), burst):
        for i, text in enumerate(texts[start : start + burst], start):
            on_text(publishers[i % len(publishers)], text)
        await asyncio.sleep(0)
    while app.metrics.messages_acked - acked_before < len(texts):
        if app.metrics.errors_sent:
            raise RuntimeError(f"{app.metrics.errors_sent} requests were refused")
        await asyncio.sleep(0.001)


def _writer_clock(app: App) -> Callable[[], float]:
    thread = app.writer._thread
    assert thread is not None and thread.ident is not None
    clock = time.pthread_getcpuclockid(thread.ident)
    return lambda: time.clock_gettime(clock)


async def measure(args: argparse.Namespace, data_dir: Path) -> dict[str, Any]:
    app, conns, room_id = await _world(data_dir, args.members)
    publishers = conns[: args.publishers]
    gc.freeze()  # as server.py does after start-up
    gc.set_threshold(10_000)
    writer_cpu = _writer_clock(app)
    await _run(app, publishers, _texts(args.messages // 5, room_id, args.client_ids), args.burst)

    texts = _texts(args.messages, room_id, args.client_ids)
    loop_before, writer_before = time.thread_time(), writer_cpu()
    await _run(app, publishers, texts, args.burst)
    loop_us = (time.thread_time() - loop_before) / len(texts) * 1e6
    writer_us = (writer_cpu() - writer_before) / len(texts) * 1e6

    timer = Timer()
    timer.calibrate()
    stages = _stages(app)
    originals = [(owner, name, getattr(owner, name)) for _, owner, name in stages]
    for (label, owner, name), (_, _, fn) in zip(stages, originals, strict=True):
        setattr(owner, name, timer.wrap(label, fn))
    # The session bound the handler at start.
    app.sessions._handlers[protocol.SendMessage] = app.chat.messages.send_message
    texts = _texts(args.messages, room_id, args.client_ids)
    instrumented_before = time.thread_time_ns()
    await _run(app, publishers, texts, args.burst)
    instrumented_ns = time.thread_time_ns() - instrumented_before
    for owner, name, fn in originals:
        setattr(owner, name, fn)
    per_message = timer.per_message(len(texts), instrumented_ns)
    await app.close(10)
    return {
        "members": args.members,
        "publishers": args.publishers,
        "messages": args.messages,
        "client_ids": args.client_ids,
        "loop_us_per_message": round(loop_us, 2),
        "writer_us_per_message": round(writer_us, 2),
        "flushes": app.metrics.flushes,
        "stages_us_per_message": {k: round(v, 2) for k, v in per_message.items()},
        "threads": threading.active_count(),
    }


def main() -> None:
    parser = argparse.ArgumentParser(prog="python -m bench.stages", description=__doc__)
    parser.add_argument("--members", type=int, default=100)
    parser.add_argument("--publishers", type=int, default=10)
    parser.add_argument("--messages", type=int, default=50_000)
    parser.add_argument("--burst", type=int, default=200, help="messages per loop iteration")
    parser.add_argument("--client-ids", choices=["v7", "random"], default="random")
    parser.add_argument("--json", help="write the result to this file")
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as data_dir:
        result = uvloop.run(measure(args, Path(data_dir)))
    print(
        f"{args.members} members, {args.publishers} publishers, {args.messages:,} messages "
        f"({args.client_ids} clientIds): loop {result['loop_us_per_message']} µs/message, "
        f"writer thread {result['writer_us_per_message']} µs/message"
    )
    for label, us in result["stages_us_per_message"].items():
        print(f"  {label:<46} {us:6.2f} µs")
    if args.json:
        Path(args.json).write_bytes(orjson.dumps(result, option=orjson.OPT_INDENT_2))


if __name__ == "__main__":
    main()
