"""Room fan-out benchmark: N receivers in one room, P publishers, saturated or at a fixed rate.

With ``--rooms R`` it is the many-rooms scenario instead: R rooms, each receiver in
``--rooms-per-client`` of them (receiver i in rooms iK .. iK+K-1, modulo R), one publisher
per room, optionally ``--big-rooms`` more rooms of ``--big-room-size`` receivers each.

Counting receivers are one C process (``loadtest/fanrecv.c``, built on first use) or, with
``--receivers python``, raw-socket clients (:mod:`loadtest.wsraw`); both count frames by
walking headers. ``--sample`` Python receivers parse every message to measure latency from
the *scheduled* send time (embedded in the content), so a stalled server cannot hide its
queueing delay (no coordinated omission). Saturated publishers keep ``--window`` messages in
flight, counted by their own ``new_message`` echo (fan-out) or, with ``--gate ack``, by
``message_ack`` (the durable commit); ack latency is reported either way.
``python -m loadtest.fanout --help`` for options; loadtest/README.md has the commands.
"""

from __future__ import annotations

import argparse
import asyncio
import collections
import hashlib
import math
import os
import re
import shutil
import subprocess
import sys
import time
import urllib.request
import uuid
from collections.abc import Callable
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

import orjson

from loadtest import procs
from loadtest.accounts import Account, register_many, source_address
from loadtest.wsraw import MarkerCounter, RawClient, connect

CONNECTIONS_PER_ACCOUNT = 20  # the server's default max_connections_per_user
SETUP_CONCURRENCY = 200
DRAIN_SECONDS = 5.0
READY_SECONDS = 300.0
FANRECV_SOURCE = Path(__file__).resolve().parent / "fanrecv.c"
_NEW_MESSAGE = b'{"type":"new_message"'
_ACK = b'{"type":"message_ack"'
_ERROR = b'{"type":"error"'
# Not "@": a "@<digits>" is a mention of a username nobody has, a store read per message.
_SCHEDULED = b'"content":"~'
_ACK_NUMBER = re.compile(rb'\{"type":"message_ack","data":\{"clientId":"[^"]*-(\d+)"')
_ERROR_CODE = re.compile(rb'\{"type":"error","data":\{"message":"(?:[^"\\]|\\.)*","code":"(\w+)"')


class SetupError(Exception):
    """A client could not authenticate, create or join the room."""


@dataclass
class Target:
    """A server under test."""

    name: str
    url: str
    pid: int | None
    auth: bool  # fastchat needs accounts; the relay ignores authenticate
    nodes: tuple[str, ...] = ()  # every node's URL when a room spans several (url: the first)
    pids: tuple[int, ...] = ()  # every node's server processes, for CPU (pid: the first)
    redis_pid: int | None = None  # the Redis of the nodes, for its CPU

    def node(self, index: int) -> Target:
        """The node client ``index`` connects to: the nodes in turn."""
        if len(self.nodes) < 2:
            return self
        return replace(self, url=self.nodes[index % len(self.nodes)])

    def cpu_seconds(self, *, main_thread: bool = False, system: bool = False) -> float | None:
        """CPU seconds of every server process (only their main threads, or in the kernel)."""
        pids = self.pids or ((self.pid,) if self.pid else ())
        if not pids:
            return None
        return sum(
            procs.cpu_seconds(pid, pid if main_thread else None, system=system) for pid in pids
        )

    @property
    def host(self) -> str:
        return urlsplit(self.url).hostname or "127.0.0.1"

    @property
    def port(self) -> int:
        return urlsplit(self.url).port or 80

    @property
    def path(self) -> str:
        return urlsplit(self.url).path or "/"


def _slow_consumer_closes(target: Target) -> int | None:
    """fastchat's ``fastchat_slow_consumer_closes_total`` from /metrics (None elsewhere)."""
    if not target.auth:
        return None
    url = f"http://{target.host}:{target.port}/metrics"
    with urllib.request.urlopen(url, timeout=5) as response:
        for line in response.read().decode().splitlines():
            if line.startswith("fastchat_slow_consumer_closes_total "):
                return int(float(line.split()[1]))
    return None


# --- connections ----------------------------------------------------------------------------


def _kind(payload: bytes) -> tuple[str, dict]:
    event = orjson.loads(payload)
    return event.get("type", ""), event.get("data") or {}


async def request(client: RawClient, messages: list[dict], expect: str, count: int = 1) -> dict:
    """Send ``messages`` and wait for ``count`` ``expect`` events (the last one's data);
    errors raise SetupError."""
    waiter: asyncio.Future[dict] = asyncio.get_running_loop().create_future()
    left = count

    def setup(payload: bytes, _received_ns: int) -> None:
        nonlocal left
        if waiter.done():
            return
        kind, data = _kind(payload)
        if kind == expect:
            left -= 1
            if not left:
                waiter.set_result(data)
        elif kind == "error":
            waiter.set_exception(SetupError(f"{data.get('code')}: {data.get('message')}"))

    client.on_message = setup
    for message in messages:
        client.send(orjson.dumps(message))
    try:
        return await asyncio.wait_for(waiter, 60)
    except (TimeoutError, SetupError):
        client.close()
        raise


async def open_client(
    target: Target,
    index: int,
    token: str,
    first: list[dict],
    expect: str,
    *,
    compression: bool = False,
    count: int = 1,
) -> tuple[RawClient, dict]:
    """Connect (to the node of ``index``), authenticate, send ``first`` and wait for
    ``count`` ``expect`` events."""
    target = target.node(index)
    source = source_address(target.host, index)
    client = await connect(
        target.host,
        target.port,
        target.path,
        compression=compression,
        local_addr=(source, 0) if source else None,
    )
    data = await request(client, [{"type": "authenticate", "token": token}, *first], expect, count)
    return client, data


async def open_receivers(
    target: Target,
    tokens: list[str],
    rooms: list[list[str]],
    compression: bool,
    first_index: int,
    sample: int = 0,
    on_sample: Callable[[bytes, int], None] | None = None,
) -> list[RawClient]:
    """One receiver per token, joined to its ``rooms`` (one list per token); the first
    ``sample`` hand messages to ``on_sample``."""
    gate = asyncio.Semaphore(SETUP_CONCURRENCY)

    async def one(i: int) -> RawClient:
        async with gate:
            joins = [{"type": "join_room", "roomId": room_id} for room_id in rooms[i]]
            client, _ = await open_client(
                target,
                first_index + i,
                tokens[i],
                joins,
                "room_joined",
                compression=compression,
                count=len(joins),
            )
            client.on_message = on_sample if i < sample else None
            return client

    return list(await asyncio.gather(*(one(i) for i in range(len(tokens)))))


def spread_tokens(accounts: list[Account], count: int) -> list[str]:
    """``count`` tokens, at most CONNECTIONS_PER_ACCOUNT per account."""
    return [accounts[i // CONNECTIONS_PER_ACCOUNT].token for i in range(count)]


# --- measurement ----------------------------------------------------------------------------


@dataclass
class Sampler:
    """Latency of room messages whose scheduled send time falls in the measuring window."""

    start_ns: int = 0
    end_ns: int = 0
    latencies: list[int] = field(default_factory=list)
    received: int = 0

    def on_message(self, payload: bytes, received_ns: int) -> None:
        if not payload.startswith(_NEW_MESSAGE):
            return
        # The content starts with "~<scheduled ns>:"; found without decoding the JSON.
        at = payload.find(_SCHEDULED)
        if at < 0:
            return
        at += len(_SCHEDULED)
        scheduled = int(payload[at : payload.index(b":", at)])
        if self.start_ns <= scheduled < self.end_ns:
            self.received += 1
            self.latencies.append(received_ns - scheduled)


class Publisher:
    """One sending connection: counts its own echoes, its acks and the errors it gets back.

    A publisher is a member of the room, so it receives every broadcast; parsing them all in
    Python would make the generator the bottleneck in small rooms. It scans each raw read
    instead (:attr:`wsraw.RawClient.on_data`): its own clientId prefix marks its echoes and
    its acks, and acks and errors have markers of their own. An ack or error cut by a read
    boundary is still counted, only not timed (ack) or named (error: ``"?"``).
    """

    def __init__(
        self, client: RawClient, index: int, room_id: str, size: int, run: str, gate: str = "echo"
    ):
        self.client = client
        self.index = index
        self.room_id = room_id
        self.size = size
        self.run = run
        self.gate = gate
        self.sent = 0
        self.sent_in_window = 0
        self.send_lag: list[int] = []
        self.ack_latency: list[int] = []
        self.window = (0, 0)
        self.wake = asyncio.Event()
        self._mine = MarkerCounter(f'"clientId":"{run}-{index}-'.encode())  # echoes and acks
        self._acks = MarkerCounter(_ACK)
        self._errors = MarkerCounter(_ERROR)
        self._error_codes: collections.Counter[str] = collections.Counter()
        self._sent_at: dict[int, int] = {}  # message number -> send time, inside the window
        client.on_message = None  # count mode: frames are walked, not parsed
        client.on_data = self.on_data

    @property
    def echoed(self) -> int:
        return self._mine.count - self._acks.count

    @property
    def acked(self) -> int:
        return self._acks.count

    @property
    def errors(self) -> collections.Counter[str]:
        """Error events by code; ``"?"`` for those cut by a read boundary."""
        errors = collections.Counter(self._error_codes)
        unnamed = self._errors.count - sum(errors.values())
        if unnamed:
            errors["?"] = unnamed
        return errors

    @property
    def settled(self) -> int:
        """Messages no longer in flight by the gate: echoed (or acked) or refused."""
        done = self.acked if self.gate == "ack" else self.echoed
        return done + self._errors.count

    @property
    def all_settled(self) -> bool:
        errors = self._errors.count
        return self.echoed + errors >= self.sent and self.acked + errors >= self.sent

    def on_data(self, buf: bytearray, start: int, end: int) -> None:
        before = self.settled
        self._mine.feed(buf, start, end)
        acks = self._acks.count
        self._acks.feed(buf, start, end)
        if self._acks.count != acks:
            received_ns = time.monotonic_ns()
            for match in _ACK_NUMBER.finditer(buf, start, end):
                sent_at = self._sent_at.pop(int(match.group(1)), None)
                if sent_at is not None:
                    self.ack_latency.append(received_ns - sent_at)
        errors = self._errors.count
        self._errors.feed(buf, start, end)
        if self._errors.count != errors:
            for match in _ERROR_CODE.finditer(buf, start, end):
                self._error_codes[match.group(1).decode()] += 1
        if self.settled != before:
            self.wake.set()

    def send(self, scheduled: list[int]) -> None:
        """Send one message per scheduled time (monotonic ns) in one write."""
        if self.window[0] <= scheduled[0] < self.window[1]:
            # How late the generator itself is: part of the measured latency, shown apart.
            self.send_lag.append(time.monotonic_ns() - scheduled[0])
        frames = []
        now = time.monotonic_ns()
        for at in scheduled:
            self.sent += 1
            if self.window[0] <= at < self.window[1]:
                self.sent_in_window += 1
                self._sent_at[self.sent] = now
            head = f"~{at}:{self.index}:{self.sent} "
            message = {
                "type": "send_message",
                "roomId": self.room_id,
                "content": head + "x" * max(0, self.size - len(head)),
                "clientId": f"{self.run}-{self.index}-{self.sent}",
            }
            frames.append(orjson.dumps(message))
        self.client.send_many(frames)

    async def saturate(self, stop: asyncio.Event, window: int) -> None:
        """As fast as the gate allows: at most ``window`` messages in flight."""
        while not stop.is_set():
            room = window - (self.sent - self.settled)
            if room > 0:
                now = time.monotonic_ns()
                self.send([now] * room)
            self.wake.clear()
            if self.sent - self.settled >= window:
                try:
                    await asyncio.wait_for(self.wake.wait(), 0.5)
                except TimeoutError:
                    continue
            else:
                await asyncio.sleep(0)

    async def fixed_rate(
        self, stop: asyncio.Event, start_ns: int, rate: float, publishers: int
    ) -> None:
        """This publisher's share of ``rate`` messages/s, on a fixed schedule from ``start_ns``."""
        interval = publishers * 1e9 / rate
        due = start_ns + self.index * 1e9 / rate
        while not stop.is_set():
            now = time.monotonic_ns()
            batch = []
            while due <= now:
                batch.append(int(due))
                due += interval
            if batch:
                self.send(batch)
            await asyncio.sleep(max(0.0, (due - time.monotonic_ns()) / 1e9))


@dataclass
class Snapshot:
    at: float
    frames: int
    sent: int
    echoed: int
    reached: int  # sum of each publisher's echoes times the receivers of its room
    acked: int
    server_cpu: float | None
    server_main_thread_cpu: float | None
    server_system_cpu: float | None
    server_writes: int | None
    redis_cpu: float | None
    generator_cpu: dict[str, float]  # CPU seconds per generator process
    closed: int  # receivers outside this process that were closed


class Children:
    """Extra generator processes, each holding a share of the receivers (``--procs``)."""

    def __init__(self) -> None:
        self.procs: list[asyncio.subprocess.Process] = []

    async def start(
        self,
        target: Target,
        shares: list[list[str]],
        room_shares: list[list[list[str]]],
        args: Any,
    ) -> None:
        for number, (tokens, rooms) in enumerate(zip(shares, room_shares, strict=True), 1):
            proc = await asyncio.create_subprocess_exec(
                sys.executable,
                "-m",
                "loadtest.fanout",
                "--child",
                cwd=procs.ROOT,
                stdin=asyncio.subprocess.PIPE,
                stdout=asyncio.subprocess.PIPE,
            )
            spec = {
                "url": target.url,
                "nodes": target.nodes,
                "tokens": tokens,
                "rooms": rooms,
                "compression": args.compression,
                "first_index": number * 100_000,
                "cpus": sorted(args.generator_cpus),
            }
            assert proc.stdin is not None and proc.stdout is not None
            proc.stdin.write(orjson.dumps(spec) + b"\n")
            self.procs.append(proc)
        for proc in self.procs:
            assert proc.stdout is not None
            line = await proc.stdout.readline()
            if not line.startswith(b"ready"):
                raise SetupError(f"generator child failed: {line!r}")

    async def ask(self, command: bytes) -> list[dict]:
        for proc in self.procs:
            assert proc.stdin is not None
            proc.stdin.write(command + b"\n")
        replies = []
        for proc in self.procs:
            assert proc.stdout is not None
            replies.append(orjson.loads(await proc.stdout.readline()))
        return replies

    async def stop(self) -> None:
        for proc in self.procs:
            assert proc.stdin is not None
            proc.stdin.write(b"exit\n")
            await proc.wait()


async def child_main() -> None:
    """A receiver-only generator process driven over stdin/stdout by the parent."""
    loop = asyncio.get_running_loop()
    spec = orjson.loads(await loop.run_in_executor(None, sys.stdin.readline))
    procs.pin(set(spec["cpus"]))
    target = Target("child", spec["url"], None, True, tuple(spec["nodes"]))
    receivers = await open_receivers(
        target, spec["tokens"], spec["rooms"], spec["compression"], spec["first_index"]
    )
    print("ready", flush=True)
    while (await loop.run_in_executor(None, sys.stdin.readline)).strip() not in ("exit", ""):
        state = {
            "frames": sum(r.frames for r in receivers),
            "cpu": time.process_time(),
            "closed": sum(r.closed.done() for r in receivers),
        }
        print(orjson.dumps(state).decode(), flush=True)
    for receiver in receivers:
        receiver.close()


# --- the C receiver ---------------------------------------------------------------------------


def build_fanrecv() -> Path | None:
    """The compiled ``fanrecv.c`` (cached by source hash), or None if gcc is missing."""
    source = FANRECV_SOURCE.read_bytes()
    binary = procs.CACHE / f"fanrecv-{hashlib.sha256(source).hexdigest()[:16]}"
    if binary.exists():
        return binary
    gcc = shutil.which("gcc")
    if gcc is None:
        return None
    procs.CACHE.mkdir(parents=True, exist_ok=True)
    partial = binary.with_suffix(f".{os.getpid()}.tmp")
    subprocess.run([gcc, "-O2", "-o", str(partial), str(FANRECV_SOURCE)], check=True)
    partial.replace(binary)
    return binary


class CReceivers:
    """One ``fanrecv`` process holding the counting receivers, driven over stdin/stdout."""

    def __init__(self, binary: Path) -> None:
        self.binary = binary
        self.proc: asyncio.subprocess.Process | None = None

    @property
    def pid(self) -> int | None:
        return self.proc.pid if self.proc is not None else None

    async def start(
        self,
        target: Target,
        tokens: list[str],
        rooms: list[list[str]],
        compression: bool,
        first_index: int,
        cpus: set[int],
    ) -> None:
        """Connect ``len(tokens)`` receivers (one token and its rooms each) and wait until
        all joined."""
        argv = [str(self.binary), "-s", str(first_index)]
        if compression:
            argv.append("-z")
        argv += [target.host, str(target.port), target.path, rooms[0][0], str(len(tokens))]
        self.proc = proc = await asyncio.create_subprocess_exec(
            *argv,
            stdin=asyncio.subprocess.PIPE,
            stdout=asyncio.subprocess.PIPE,
            stderr=asyncio.subprocess.PIPE,
        )
        procs.pin(cpus, proc.pid)
        assert proc.stdin is not None and proc.stdout is not None
        lines = (f"{token} {','.join(mine)}\n" for token, mine in zip(tokens, rooms, strict=True))
        proc.stdin.write("".join(lines).encode())
        line = await asyncio.wait_for(proc.stdout.readline(), READY_SECONDS)
        if line.strip() != b"ready":
            assert proc.stderr is not None
            error = (await proc.stderr.read()).decode(errors="replace").strip()
            raise SetupError(f"fanrecv failed: {error or line!r}")

    async def tick(self) -> dict[str, int]:
        """Cumulative ``frames``, ``bytes``, ``closed`` and ``joined`` counts."""
        proc = self.proc
        assert proc is not None and proc.stdin is not None and proc.stdout is not None
        proc.stdin.write(b"tick\n")
        return orjson.loads(await proc.stdout.readline())

    def cpu_seconds(self) -> float | None:
        return procs.cpu_seconds(self.proc.pid) if self.proc is not None else None

    async def stop(self) -> None:
        if self.proc is None:
            return
        assert self.proc.stdin is not None
        if self.proc.returncode is None:
            self.proc.stdin.write(b"quit\n")
        await self.proc.wait()


# --- one measurement ------------------------------------------------------------------------


async def make_accounts(target: Target, receivers: int, extra: int) -> tuple[list[str], list[str]]:
    """Tokens for ``receivers`` receiver connections and ``extra`` other connections."""
    if not target.auth:
        return ["relay"] * receivers, ["relay"] * extra
    n = math.ceil(receivers / CONNECTIONS_PER_ACCOUNT)
    loop = asyncio.get_running_loop()
    accounts = await loop.run_in_executor(
        None, register_many, target.host, target.port, n + extra, "lt"
    )
    return spread_tokens(accounts[:n], receivers), [a.token for a in accounts[n:]]


async def _snapshot(
    target: Target,
    receivers: list[RawClient],
    pubs: list[Publisher],
    children: Children,
    fanrecvs: list[CReceivers],
    reach: list[int],
) -> Snapshot:
    replies = await children.ask(b"snap")
    counts = [await fanrecv.tick() for fanrecv in fanrecvs]
    recv_cpu = [fanrecv.cpu_seconds() for fanrecv in fanrecvs]
    return Snapshot(
        at=time.monotonic(),
        frames=sum(r.frames for r in receivers)
        + sum(c["frames"] for c in replies)
        + sum(c["frames"] for c in counts),
        sent=sum(p.sent for p in pubs),
        echoed=sum(p.echoed for p in pubs),
        reached=sum(p.echoed * n for p, n in zip(pubs, reach, strict=True)),
        acked=sum(p.acked for p in pubs),
        server_cpu=target.cpu_seconds(),
        server_main_thread_cpu=target.cpu_seconds(main_thread=True),
        server_system_cpu=target.cpu_seconds(system=True),
        server_writes=sum(map(procs.write_calls, target.pids or (target.pid,)))
        if target.pid
        else None,
        redis_cpu=procs.cpu_seconds(target.redis_pid) if target.redis_pid else None,
        generator_cpu={
            "python": time.process_time(),
            **{f"child{i}": c["cpu"] for i, c in enumerate(replies, 1)},
            **({"fanrecv": sum(filter(None, recv_cpu))} if fanrecvs else {}),
        },
        closed=sum(c["closed"] for c in replies) + sum(c["closed"] for c in counts),
    )


def _change(
    before: Snapshot, after: Snapshot, field: str, denominator: float, scale: float, digits: int
) -> float | None:
    """``scale`` times how much ``field`` grew between the snapshots, per ``denominator``; None
    when a snapshot lacks it or there is nothing to divide by."""
    now, then = getattr(after, field), getattr(before, field)
    if now is None or then is None or denominator <= 0:
        return None
    return round(scale * (now - then) / denominator, digits)


def _percentiles(values: list[int]) -> dict[str, float]:
    if not values:
        return {}
    values.sort()
    pick = {"p50": 0.50, "p90": 0.90, "p99": 0.99}
    out = {
        name: values[min(len(values) - 1, int(q * len(values)))] / 1e6 for name, q in pick.items()
    }
    out["max"] = values[-1] / 1e6
    return out


def receiver_rooms(index: int, args: argparse.Namespace) -> list[int]:
    """The rooms (numbers) receiver ``index`` joins: ``--rooms-per-client`` consecutive
    rooms from ``index * K`` (modulo ``--rooms``), and its big room, if it has one."""
    if not args.rooms:
        return [0]
    per_client = args.rooms_per_client
    mine = [(index * per_client + j) % args.rooms for j in range(per_client)]
    if index < args.big_rooms * args.big_room_size:
        mine.append(args.rooms + index // args.big_room_size)
    return mine


async def open_publishers(
    target: Target, tokens: list[str], args: argparse.Namespace, run: str
) -> tuple[list[str], list[Publisher]]:
    """The rooms (created, unless ``--room``) and a joined publisher per token.

    One room of every publisher, or (``--rooms``) publisher i creates and publishes to room
    i; creators work concurrently, ``SETUP_CONCURRENCY`` at a time.
    """
    rooms = args.rooms + args.big_rooms if args.rooms else 1
    room_ids = [args.room] * rooms if args.room else [""] * rooms
    clients: list[RawClient | None] = [None] * len(tokens)
    gate = asyncio.Semaphore(SETUP_CONCURRENCY)

    async def create(i: int) -> None:
        async with gate:
            create = {"type": "create_room", "name": f"load-{run}-{i}", "isPrivate": False}
            client, data = await open_client(target, i, tokens[i], [create], "room_created")
            room_ids[i] = data["room"]["id"]
            join = [{"type": "join_room", "roomId": room_ids[i]}]
            await request(client, join, "room_joined")
            clients[i] = client

    async def join(i: int) -> None:
        async with gate:
            first = [{"type": "join_room", "roomId": room_ids[i % rooms]}]
            clients[i] = (await open_client(target, i, tokens[i], first, "room_joined"))[0]

    creators = 0 if args.room else rooms
    await asyncio.gather(*(create(i) for i in range(creators)))
    await asyncio.gather(*(join(i) for i in range(creators, len(tokens))))
    pubs = [
        Publisher(client, i, room_ids[i % rooms], args.size, run, args.gate)
        for i, client in enumerate(clients)
        if client is not None
    ]
    return room_ids, pubs


async def run_fanout(target: Target, args: argparse.Namespace) -> dict[str, Any]:
    """Set up the room(s), publish for warm-up + ``args.seconds``, and measure."""
    run = uuid.uuid4().hex[:8]
    receiver_tokens, publisher_tokens = await make_accounts(target, args.clients, args.publishers)
    room_ids, pubs = await open_publishers(target, publisher_tokens, args, run)
    clients = [pub.client for pub in pubs]
    layout = [receiver_rooms(i, args) for i in range(args.clients)]
    receiver_room_ids = [[room_ids[number] for number in mine] for mine in layout]
    members = collections.Counter(number for mine in layout for number in mine)
    # A publisher's message reaches the receivers of its room.
    reach = [members[room_ids.index(pub.room_id)] for pub in pubs]

    # With the C receiver, Python keeps only the latency samplers (at most half the room),
    # and one C process per node holds that node's share of the rest.
    sample = min(args.sample, args.clients // 2) if args.fanrecv else args.sample
    python_count = sample if args.fanrecv else args.clients
    nodes = target.nodes or (target.url,)
    counted = math.ceil((args.clients - sample) / len(nodes))
    firsts = [sample + number * counted for number in range(len(nodes))]
    fanrecvs = [CReceivers(args.fanrecv) for first in firsts if first < args.clients]
    fanrecvs = fanrecvs if args.fanrecv else []
    share = math.ceil(python_count / args.procs) if python_count else 1
    starts = range(0, python_count, share)
    shares = [receiver_tokens[i : min(i + share, python_count)] for i in starts] or [[]]
    room_shares = [receiver_room_ids[i : min(i + share, python_count)] for i in starts] or [[]]
    sampler = Sampler()
    receivers = await open_receivers(
        target,
        shares[0],
        room_shares[0],
        args.compression,
        args.publishers,
        sample,
        sampler.on_message,
    )
    children = Children()
    await children.start(target, shares[1:], room_shares[1:], args)
    # connections per node: the publishers and Python receivers in turn, then the C ones
    per_node = collections.Counter(target.node(i).url for i in range(len(pubs) + python_count))
    for fanrecv, node, first in zip(fanrecvs, nodes, firsts, strict=False):
        await fanrecv.start(
            replace(target, url=node),
            receiver_tokens[first : first + counted],
            receiver_room_ids[first : first + counted],
            args.compression,
            args.publishers + first,
            args.generator_cpus,
        )
        per_node[node] += len(receiver_tokens[first : first + counted])
    room_id = room_ids[0]
    stalled = []
    for i in range(args.stalled):  # members that stop reading right after they joined
        join = [{"type": "join_room", "roomId": room_id}]
        token = receiver_tokens[i % len(receiver_tokens)]
        client, _ = await open_client(
            target, args.publishers + sample + i, token, join, "room_joined"
        )
        assert client.transport is not None
        client.transport.pause_reading()
        stalled.append(client)
    await asyncio.sleep(1.0)  # let the join announcements drain before the clock starts

    stop = asyncio.Event()
    start = time.monotonic_ns()
    sampler.start_ns = start + int(args.warmup * 1e9)
    sampler.end_ns = sampler.start_ns + int(args.seconds * 1e9)
    for pub in pubs:
        pub.window = (sampler.start_ns, sampler.end_ns)
    if args.rate > 0:
        tasks = [asyncio.create_task(p.fixed_rate(stop, start, args.rate, len(pubs))) for p in pubs]
    else:
        tasks = [asyncio.create_task(p.saturate(stop, args.window)) for p in pubs]
    await asyncio.sleep(args.warmup)
    before = await _snapshot(target, receivers, pubs, children, fanrecvs, reach)
    await asyncio.sleep(args.seconds)
    after = await _snapshot(target, receivers, pubs, children, fanrecvs, reach)
    rss = procs.rss_kib(target.pid) if target.pid else None
    peak_rss = procs.rss_kib(target.pid, peak=True) if target.pid else None
    stop.set()
    await asyncio.gather(*tasks)
    deadline = time.monotonic() + DRAIN_SECONDS
    while time.monotonic() < deadline and not all(p.all_settled for p in pubs):
        await asyncio.sleep(0.05)
    await asyncio.sleep(0.3)

    closes = collections.Counter(str(r.close_code) for r in receivers if r.closed.done())
    closes["others"] = after.closed
    # The stalled clients read nothing, so they cannot see their own close: ask the server.
    slow_closes = _slow_consumer_closes(target) if stalled else None
    for client in [*receivers, *clients, *stalled]:
        client.close()
    await children.stop()
    for fanrecv in fanrecvs:
        await fanrecv.stop()

    elapsed = after.at - before.at
    echo_count, delivery_count = after.echoed - before.echoed, after.frames - before.frames
    errors: collections.Counter[str] = collections.Counter()
    for pub in pubs:
        errors.update(pub.errors)
    echoed = (after.echoed - before.echoed) / elapsed
    sampled = collections.Counter(n for mine in layout[: min(sample, len(receivers))] for n in mine)
    return {
        "target": target.name,
        "clients": args.clients,
        "nodes": len(nodes),
        "connections_per_node": [per_node[node] for node in nodes],
        "publishers": args.publishers,
        "offered_per_s": args.rate or "saturate",
        "gate": args.gate if not args.rate else None,
        "window": args.window if not args.rate else None,
        "receivers": "c" if args.fanrecv else "python",
        "size": args.size,
        "compression": args.compression,
        "seconds": round(elapsed, 2),
        "sent_per_s": round((after.sent - before.sent) / elapsed),
        "accepted_per_s": round(echoed),
        "acked_per_s": round((after.acked - before.acked) / elapsed),
        "deliveries_per_s": round((after.frames - before.frames) / elapsed),
        "expected_deliveries_per_s": round((after.reached - before.reached) / elapsed),
        "rooms": len(room_ids),
        "room_members": [min(members.values()), max(members.values())],
        "latency_ms": _percentiles(sampler.latencies),
        "latency_samples": len(sampler.latencies),
        "ack_latency_ms": _percentiles([lat for p in pubs for lat in p.ack_latency]),
        "send_lag_ms": _percentiles([lag for p in pubs for lag in p.send_lag]),
        "sample_expected": sum(p.sent_in_window * sampled[room_ids.index(p.room_id)] for p in pubs),
        "server_cpu_pct": _change(before, after, "server_cpu", elapsed, 100, 1),
        # fastchat's storage writer and checkpointer: on the server's core, what persistence
        # takes from the fan-out (Bun's threads for Bun, none for the websockets relay).
        "server_other_threads_cpu_pct": round(
            100
            * (
                (after.server_cpu - after.server_main_thread_cpu)
                - (before.server_cpu - before.server_main_thread_cpu)
            )
            / elapsed,
            1,
        )
        if after.server_cpu is not None and before.server_cpu is not None
        else None,
        # in the kernel: mostly the sockets' send() calls
        "server_system_cpu_pct": _change(before, after, "server_system_cpu", elapsed, 100, 1),
        "server_rss_mib": round(rss / 1024, 1) if rss else None,
        "server_peak_rss_mib": round(peak_rss / 1024, 1) if peak_rss else None,
        "redis_cpu_pct": _change(before, after, "redis_cpu", elapsed, 100, 1),
        # Redis' CPU per message it sequenced (each also published to every node)
        "redis_cpu_us_per_message": _change(before, after, "redis_cpu", echo_count, 1e6, 2),
        # CPU and write calls per delivery: what a delivery costs, however loaded the machine
        "server_cpu_us_per_delivery": _change(before, after, "server_cpu", delivery_count, 1e6, 3),
        "server_writes_per_delivery": _change(before, after, "server_writes", delivery_count, 1, 4),
        "generator_cpu_pct": {
            name: round(100 * (after.generator_cpu[name] - cpu) / elapsed, 1)
            for name, cpu in before.generator_cpu.items()
        },
        "errors": dict(errors),
        "receiver_closes": {k: v for k, v in closes.items() if v},
        "stalled": args.stalled,
        "slow_consumer_closes": slow_closes,
    }


async def run_idle(target: Target, args: argparse.Namespace) -> dict[str, Any]:
    """Server RSS per idle, authenticated, joined connection."""
    if target.pid is None:
        raise SystemExit("--idle-memory needs the server pid: --spawn-server or --server-pid")
    tokens, (warm_token,) = await make_accounts(target, args.clients, 1)
    room_id = args.room or "general"
    join = [{"type": "join_room", "roomId": room_id}]
    warm, _ = await open_client(
        target, 0, warm_token, join, "room_joined", compression=args.compression
    )
    await asyncio.sleep(1.0)
    before = procs.rss_kib(target.pid)
    receivers = await open_receivers(target, tokens, [[room_id]] * len(tokens), args.compression, 1)
    await asyncio.sleep(2.0)
    after = procs.rss_kib(target.pid)
    closed = sum(r.closed.done() for r in receivers)
    for client in [warm, *receivers]:
        client.close()
    return {
        "target": target.name,
        "mode": "idle-memory",
        "connections": args.clients,
        "compression": args.compression,
        "rss_before_kib": before,
        "rss_after_kib": after,
        "kib_per_connection": round((after - before) / args.clients, 2),
        "closed_early": closed,
    }


# --- output and entry point -----------------------------------------------------------------


def _brief(percentiles: dict[str, float]) -> str:
    return " ".join(f"{k} {v:.2f}" for k, v in percentiles.items()) or "no samples"


def describe(result: dict[str, Any]) -> str:
    """A human-readable block for one result."""
    if result.get("mode") == "idle-memory":
        return (
            f"{result['target']:<10} idle connections={result['connections']} "
            f"compression={'on' if result['compression'] else 'off'}: "
            f"RSS {result['rss_before_kib'] / 1024:.1f} -> "
            f"{result['rss_after_kib'] / 1024:.1f} MiB, "
            f"{result['kib_per_connection']:.1f} KiB per connection"
            + (f" ({result['closed_early']} closed early!)" if result["closed_early"] else "")
        )
    r = result
    latency = _brief(r["latency_ms"])
    expected = r["sample_expected"]
    got = f"{100 * r['latency_samples'] / expected:.1f}%" if expected else "-"
    cpu = "?" if r["server_cpu_pct"] is None else r["server_cpu_pct"]
    threads = r.get("server_other_threads_cpu_pct")
    rss = "?" if r["server_rss_mib"] is None else r["server_rss_mib"]
    return "\n".join(
        [
            f"{r['target']:<10} clients={r['clients']} publishers={r['publishers']} "
            + (
                f"rooms={r['rooms']} (members {r['room_members'][0]}-{r['room_members'][1]}) "
                if r.get("rooms", 1) > 1
                else ""
            )
            + f"offered={r['offered_per_s']} size={r['size']} "
            f"compression={'on' if r['compression'] else 'off'} seconds={r['seconds']}"
            + (f" gate={r['gate']} window={r['window']}" if r["gate"] else ""),
            f"  sent {r['sent_per_s']:,}/s  accepted (echoed) {r['accepted_per_s']:,}/s  "
            f"acked {r['acked_per_s']:,}/s  deliveries {r['deliveries_per_s']:,}/s "
            f"(accepted x room members = {r['expected_deliveries_per_s']:,}/s)",
            f"  latency ms {latency}  (n={r['latency_samples']:,}, {got} of sampled deliveries)",
            f"  ack latency ms (send -> message_ack) {_brief(r['ack_latency_ms'])}",
            f"  generator send lag ms {_brief(r['send_lag_ms'])} (included in the latency)",
            f"  server cpu {cpu}%"
            + (f" (threads besides the loop {threads}%)" if threads is not None else "")
            + (
                f" (in the kernel {r['server_system_cpu_pct']}%)"
                if r.get("server_system_cpu_pct") is not None
                else ""
            )
            + f"  rss {rss} MiB (peak {r.get('server_peak_rss_mib')})  generator cpu % "
            + " ".join(f"{name} {pct}" for name, pct in r["generator_cpu_pct"].items())
            + f"  ({r['receivers']} receivers)",
            f"  per delivery: server cpu {r.get('server_cpu_us_per_delivery')} µs, "
            f"write calls {r.get('server_writes_per_delivery')}"
            + (f"  (over {r['nodes']} nodes)" if r.get("nodes", 1) > 1 else ""),
            *(
                [
                    f"  redis cpu {r['redis_cpu_pct']}%, "
                    f"{r['redis_cpu_us_per_message']} µs per message"
                ]
                if r.get("redis_cpu_pct") is not None
                else []
            ),
            f"  errors {r['errors'] or 'none'}  receiver closes {r['receiver_closes'] or 'none'}"
            + (
                f"  stalled members {r['stalled']}, slow-consumer closes "
                f"{r['slow_consumer_closes']}"
                if r.get("stalled")
                else ""
            ),
        ]
    )


def summary(results: list[dict[str, Any]]) -> str:
    """One line per fan-out result, side by side (the servers measured in this invocation)."""
    lines = [
        f"{'server':<10} {'deliveries/s':>13} {'accepted/s':>11} {'p50 ms':>9} {'p99 ms':>9} "
        f"{'server cpu':>10}  generator cpu %"
    ]
    for r in results:
        latency = r["latency_ms"]
        p50, p99 = (f"{latency[k]:.1f}" if latency else "-" for k in ("p50", "p99"))
        cpu = "?" if r["server_cpu_pct"] is None else f"{r['server_cpu_pct']}%"
        lines.append(
            f"{r['target']:<10} {r['deliveries_per_s']:>13,} {r['accepted_per_s']:>11,} "
            f"{p50:>9} {p99:>9} {cpu:>10}  "
            + " ".join(f"{name} {pct}" for name, pct in r["generator_cpu_pct"].items())
        )
    return "\n".join(lines)


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(
        prog="python -m loadtest.fanout", description=__doc__.splitlines()[0]
    )
    add = parser.add_argument
    add(
        "--url",
        action="append",
        help="fastchat WebSocket URL (HTTP base is derived; default ws://127.0.0.1:3000/ws); "
        "repeat for the nodes of a cluster: the members are spread over them",
    )
    add("--clients", type=int, default=100, help="receivers in the room")
    add("--publishers", type=int, default=10)
    add("--rate", type=float, default=0.0, help="total messages/s offered; 0 = saturate")
    add("--seconds", type=float, default=10.0, help="measuring window")
    add("--warmup", type=float, default=2.0)
    add("--window", type=int, default=64, help="saturate: messages in flight per publisher")
    add(
        "--gate",
        choices=["echo", "ack"],
        default="echo",
        help="saturate: a message leaves the window on its own new_message echo (fan-out) "
        "or on its message_ack (after the durable commit)",
    )
    add(
        "--receivers",
        choices=["c", "python"],
        help="counting receivers: one C process (default when gcc exists) or Python",
    )
    add("--size", type=int, default=100, help="message content bytes")
    add("--room", help="room id to use (default: a fresh public room via create_room)")
    add(
        "--rooms",
        type=int,
        default=0,
        help="many rooms: this many rooms, one publisher each (--publishers is ignored)",
    )
    add("--rooms-per-client", type=int, default=3, help="--rooms: rooms each receiver joins")
    add("--big-rooms", type=int, default=0, help="--rooms: this many larger rooms besides")
    add("--big-room-size", type=int, default=300, help="--big-rooms: receivers in each")
    add("--compression", action="store_true", help="receivers offer permessage-deflate")
    add("--stalled", type=int, default=0, help="extra members that never read (slow consumers)")
    add(
        "--set",
        action="append",
        default=[],
        metavar="SECTION.KEY=VALUE",
        help="config override for the spawned fastchat, e.g. websocket.coalesce_ms=5",
    )
    add(
        "--spawn-server",
        action="store_true",
        help="start fastchat pinned to CPU 0 (persistence on)",
    )
    add(
        "--server-pid",
        type=int,
        action="append",
        help="pid of an already running server, for CPU and RSS (repeat: one per node/worker)",
    )
    add("--redis-pid", type=int, help="pid of the nodes' redis-server, for its CPU")
    add(
        "--relay",
        action="append",
        choices=procs.RELAYS,
        default=[],
        help="also measure this baseline relay, side by side (repeatable: each runs in turn)",
    )
    add("--relay-only", action="store_true", help="with --relay: skip fastchat")
    add(
        "--bun",
        metavar="PATH",
        help="Bun executable for --relay bun (default: bun on PATH, "
        f"then {procs.CACHE}/node_modules/.bin/bun)",
    )
    add("--json", help="write the results to this file")
    add("--sample", type=int, default=20, help="receivers that parse messages for latency")
    add("--procs", type=int, default=1, help="generator processes sharing the receivers")
    add("--idle-memory", action="store_true", help="measure server RSS per idle connection")
    add("--server-cpu", type=int, default=0, help="CPU the spawned servers are pinned to")
    add("--child", action="store_true", help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    args.relay = list(dict.fromkeys(args.relay))  # each relay once, in the order given
    args.url = args.url or ["ws://127.0.0.1:3000/ws"]
    if len(args.url) > 1 and (args.spawn_server or args.relay):
        parser.error("several --url: the nodes are started outside (loadtest/cluster.py)")
    if args.rooms:
        if args.room:
            parser.error("--rooms creates its rooms: drop --room")
        if not 0 < args.rooms_per_client <= args.rooms:
            parser.error("--rooms-per-client must be between 1 and --rooms")
        if args.big_rooms * args.big_room_size > args.clients:
            parser.error("--big-rooms x --big-room-size exceeds --clients")
        args.publishers = args.rooms + args.big_rooms
    if args.relay_only and not args.relay:
        parser.error("--relay-only needs --relay")
    others = set(range(os.cpu_count() or 1)) - {args.server_cpu}
    args.generator_cpus = others or {args.server_cpu}
    return args


def _targets(args: argparse.Namespace, compression: str) -> list[Callable[[], tuple[Target, Any]]]:
    """Factories that start (if needed) each server under test: fastchat, then each relay."""

    def fastchat() -> tuple[Target, Any]:
        if args.spawn_server:
            spawned = procs.spawn_fastchat(
                args.server_cpu, compression=compression, overrides=args.set
            )
            return Target("fastchat", spawned.url, spawned.pid, True), spawned
        pids = tuple(args.server_pid or ())
        return Target(
            "fastchat",
            args.url[0],
            pids[0] if pids else None,
            True,
            tuple(args.url) if len(args.url) > 1 else (),
            pids,
            args.redis_pid,
        ), None

    def relay(kind: str) -> Callable[[], tuple[Target, Any]]:
        def start() -> tuple[Target, Any]:
            spawned = procs.spawn_relay(
                kind, args.server_cpu, compression=args.compression, bun=args.bun
            )
            return Target(kind, spawned.url, spawned.pid, False), spawned

        return start

    factories = [] if args.relay_only else [fastchat]
    return factories + [relay(kind) for kind in args.relay]


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    import uvloop

    if args.child:
        uvloop.run(child_main())
        return 0
    if args.spawn_server or args.relay:
        procs.pin(args.generator_cpus)
    procs.raise_nofile()
    if "bun" in args.relay:
        args.bun = procs.find_bun(args.bun)  # fail now, not after the fastchat run
    args.fanrecv = None
    if args.receivers != "python" and not args.idle_memory:
        args.fanrecv = build_fanrecv()
        if args.fanrecv is None:
            if args.receivers == "c":
                raise SystemExit("--receivers c: gcc not found to build loadtest/fanrecv.c")
            print("warning: gcc not found, counting with Python receivers", file=sys.stderr)
    results = []
    variants = [False, True] if args.idle_memory and args.spawn_server else [args.compression]
    for compression in variants:
        args.compression = compression
        for factory in _targets(args, "shared"):
            target, spawned = factory()
            try:
                runner = run_idle if args.idle_memory else run_fanout
                result = uvloop.run(runner(target, args))
            finally:
                if spawned is not None:
                    spawned.stop()
            print(describe(result), flush=True)
            results.append(result)
    if len(results) > 1 and not args.idle_memory:
        print(summary(results))
    if args.json:
        with open(args.json, "wb") as out:
            out.write(
                orjson.dumps({"argv": sys.argv[1:], "results": results}, option=orjson.OPT_INDENT_2)
            )
    return 0


if __name__ == "__main__":
    sys.exit(main())
