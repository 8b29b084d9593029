"""Accounts for the load: registered concurrently over HTTP, spread over loopback addresses."""

from __future__ import annotations

import http.client
import time
import uuid
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass

import orjson

from tests.support.accounts import registration

CONNECTIONS_PER_ADDRESS = 500  # below the server's default max_connections_per_ip (1000)


@dataclass(frozen=True, slots=True)
class Account:
    id: str
    username: str
    token: str


def source_address(host: str, index: int) -> str | None:
    """A loopback source address for the ``index``-th connection (None off loopback).

    All of 127.0.0.0/8 is local on Linux: spreading connections over 127.0.0.10, .11, …
    keeps each address under the per-IP connection and auth rate limits.
    """
    if host not in ("127.0.0.1", "localhost"):
        return None
    return f"127.0.0.{10 + index // CONNECTIONS_PER_ADDRESS}"


def register(host: str, port: int, username: str, source: str | None) -> Account:
    """``POST /api/auth/register``; waits out 429s (Retry-After)."""
    body = orjson.dumps(registration(username, "load.test"))
    bind = (source, 0) if source else None
    for _ in range(30):
        conn = http.client.HTTPConnection(host, port, timeout=60, source_address=bind)
        try:
            conn.request("POST", "/api/auth/register", body, {"Content-Type": "application/json"})
            response = conn.getresponse()
            data = response.read()
        finally:
            conn.close()
        if response.status == 201:
            reply = orjson.loads(data)
            return Account(reply["user"]["id"], username, reply["token"])
        if response.status != 429:
            raise RuntimeError(f"register {username}: HTTP {response.status} {data[:200]!r}")
        time.sleep(float(response.getheader("Retry-After") or 1))
    raise RuntimeError(f"register {username}: still rate limited")


def register_many(host: str, port: int, count: int, prefix: str, threads: int = 8) -> list[Account]:
    """Register ``count`` fresh accounts named ``PREFIX<run><i>`` with a thread pool."""
    run = uuid.uuid4().hex[:6]
    names = [f"{prefix}{run}{i}" for i in range(count)]

    def one(i: int) -> Account:
        # ~12 registrations per source address: under the default 30/minute auth limit.
        return register(host, port, names[i], source_address(host, i * 40))

    with ThreadPoolExecutor(threads) as pool:
        return list(pool.map(one, range(count)))
